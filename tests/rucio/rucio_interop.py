#!/usr/bin/env python3
"""Rucio's FTS3 transfertool (PyPI `rucio`, the version pinned in .ci/run) against a running ftsd.

Run by the integration test `rucio_transfertool_interop` (tests/integration/rucio.rs), which
starts ftsd with the test PKI, delegates the user's proxy (Rucio never delegates) and calls:

    python rucio_interop.py --fts https://127.0.0.1:PORT --cert PROXY.pem --workdir DIR [CASE ...]

Rucio runs as its conveyor daemons do, on its own database (a throwaway SQLite file created with
Rucio's models): the test builds RSEs (mock:// protocols), DIDs, replicas and requests in that
database, and the transfer paths (DirectTransfer objects) the submitter would have built. From
there on everything is Rucio's code: `assign_paths_to_transfertool_and_create_hops` (intermediate
multihop requests, DB sources), `FTS3Transfertool.group_into_submit_jobs` (`build_job_params`,
bulk grouping), `submit_transfer` (`_file_from_transfer`, `submit`, request states), and the
poller's `_handle_requests` (`bulk_query`, `FTS3ApiTransferStatusReport`, `update_transfer_state`,
lost transfers). Each case then checks what a Rucio operator would see: request states and error
messages in Rucio's database, and the job as ftsd reports it.

mock:// URLs carry the gfal2 mock plugin's parameters (size, checksum, time, errno...). Rucio
builds destination URLs from the DID name, so names carry the query: `f1?size=...&time=1`.
Packet marking is on, its scitags registry served by this script.

Every warning or error Rucio logs fails the case that caused it, unless the case expects it.
Prints `ok <case>` / `FAIL <case>: <why>` per case; exit status 1 if any case failed.
"""

import argparse
import datetime
import http.server
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
import zlib
from pathlib import Path

# ---- configuration: written before Rucio is imported (its modules read it at import time) ----

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument('--fts', required=True, help='ftsd base URL, https://host:port')
PARSER.add_argument('--cert', required=True, help="the user's proxy: certificate, key, chain")
PARSER.add_argument('--workdir', required=True, help="a fresh directory for Rucio's files")
PARSER.add_argument('cases', nargs='*', help='run only these cases')
ARGS = PARSER.parse_args()

WORKDIR = Path(ARGS.workdir)
WORKDIR.mkdir(parents=True, exist_ok=True)

# The scitags registry Rucio reads its packet-marking ids from (www.scitags.org in production),
# served locally: with packet marking on, every file Rucio submits carries a `scitag`.
SCITAGS = {'experiments': [{'expName': 'atlas', 'expId': 2, 'activities': [
    {'activityName': 'Data Consolidation', 'activityId': 17},
    {'activityName': 'User Subscriptions', 'activityId': 18},
]}]}


class ScitagsRegistry(http.server.BaseHTTPRequestHandler):
    """`GET <anything>`: the registry's JSON."""

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        body = json.dumps(SCITAGS).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


REGISTRY = http.server.ThreadingHTTPServer(('127.0.0.1', 0), ScitagsRegistry)
threading.Thread(target=REGISTRY.serve_forever, daemon=True).start()

RUCIO_CFG = WORKDIR / 'rucio.cfg'
RUCIO_CFG.write_text(f"""[common]
loglevel = INFO
[database]
default = sqlite:///{WORKDIR / 'rucio.db'}
[cache]
# Nothing listens there: Rucio falls back to no cache, so no state leaks between runs.
url = 127.0.0.1:1
[conveyor]
usercert = {ARGS.cert}
[policy]
permission = generic
schema = generic
[packet-marking]
enabled = True
exp_name = atlas
fetch_url = http://127.0.0.1:{REGISTRY.server_address[1]}/api.json
""")
os.environ['RUCIO_CONFIG'] = str(RUCIO_CFG)

import requests  # noqa: E402

from rucio.common.types import InternalAccount, InternalScope  # noqa: E402
from rucio.core import config as config_core  # noqa: E402
from rucio.core import request as request_core  # noqa: E402
from rucio.core import transfer as transfer_core  # noqa: E402
from rucio.core.replica import add_replicas  # noqa: E402
from rucio.core.rse import RseData, add_protocol, add_rse, add_rse_attribute  # noqa: E402
from rucio.core.scope import add_scope  # noqa: E402
from rucio.core.topology import Topology  # noqa: E402
from rucio.core.transfer import (  # noqa: E402
    DirectTransferImplementation, ProtocolFactory, StageinTransferImplementation)
from rucio.daemons.conveyor import poller  # noqa: E402
from rucio.daemons.conveyor.common import (  # noqa: E402
    assign_paths_to_transfertool_and_create_hops, submit_transfer)
from rucio.db.sqla import models  # noqa: E402
from rucio.db.sqla.constants import (  # noqa: E402
    DatabaseOperationType, RequestState, RequestType, RSEType)
from rucio.db.sqla.session import db_session, get_engine  # noqa: E402
from rucio.db.sqla.util import create_base_vo, create_root_account  # noqa: E402
from rucio.core.request import RequestSource, RequestWithSources, TransferDestination  # noqa: E402
from rucio.transfertool.fts3 import FTS3ApiTransferStatusReport, FTS3Transfertool  # noqa: E402

# ---- log capture: Rucio reports most trouble as log records, not exceptions ----

LOG_FILE = WORKDIR / 'rucio.log'
CURRENT = {'case': None}
CAPTURED = {}  # case name -> [(levelname, message)]


class CaseCapture(logging.Handler):
    """Files every WARNING and above under the case running when it was logged."""

    def emit(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call is itself worth failing on
            message = f'{record.msg!r} % {record.args!r}'
        if record.exc_info:
            message += '\n' + ''.join(traceback.format_exception(*record.exc_info))
        CAPTURED.setdefault(CURRENT['case'], []).append((record.levelname, message))


logging.basicConfig(filename=LOG_FILE, level=logging.DEBUG,
                    format='%(asctime)s %(levelname)s %(message)s')
_capture = CaseCapture(level=logging.WARNING)
logging.getLogger().addHandler(_capture)


def log(level, msg, *args, **kwargs):
    """The `logger` function Rucio's daemons pass around."""
    logging.log(level, msg, *args, **kwargs)


# ---- the Rucio side of the lab ----

ACCOUNT = InternalAccount('root')
SCOPE = InternalScope('test')
TPC_READ, TPC_WRITE = 'third_party_copy_read', 'third_party_copy_write'
FINAL_REQUEST_STATES = {RequestState.DONE, RequestState.FAILED, RequestState.LOST,
                        RequestState.SUBMISSION_FAILED}
STATS = request_core.TransferStatsManager()
# Rucio's default source replica path prefix on the mock RSEs.
PREFIX = '/rucio'


def build_database():
    """Rucio's schema on the SQLite file, the base VO, the root account and the test scope."""
    models.register_models(get_engine())
    create_base_vo()
    create_root_account()
    with db_session(DatabaseOperationType.WRITE) as session:
        add_scope(SCOPE, ACCOUNT, session=session)


def make_rse(name, host, tape=False, **attributes):
    """An RSE with one mock:// protocol for third-party copies, served by this ftsd."""
    rse_id = add_rse(name, vo='def', rse_type=RSEType.TAPE if tape else RSEType.DISK)
    add_protocol(rse_id, {
        'scheme': 'mock', 'hostname': host, 'port': 123, 'prefix': PREFIX,
        'impl': 'rucio.rse.protocols.mock.Default',
        'domains': {
            'lan': {'read': 1, 'write': 1, 'delete': 1},
            'wan': {'read': 1, 'write': 1, 'delete': 1, TPC_READ: 1, TPC_WRITE: 1},
        },
    })
    add_rse_attribute(rse_id, 'fts', ARGS.fts)
    for key, value in attributes.items():
        add_rse_attribute(rse_id, key, value)
    rse = RseData(rse_id)
    rse.ensure_loaded(load_name=True, load_info=True, load_attributes=True, load_columns=True)
    return rse


class Lab:
    """The RSEs every case shares (each case uses its own file names)."""

    def __init__(self):
        self.disk1 = make_rse('DISK1', 'disk1.example.org')
        self.disk2 = make_rse('DISK2', 'disk2.example.org')
        self.disk3 = make_rse('DISK3', 'disk3.example.org')
        # Checksums cannot be verified at this source: Rucio asks FTS for 'target' only.
        # It also wants IPv4 only (`ipv4`/`ipv6` job parameters).
        self.nock = make_rse('NOCKSUM', 'nocksum.example.org', verify_checksum=False,
                             use_ipv4=True)
        self.tape = make_rse('TAPE1', 'tape1.example.org', tape=True, archive_timeout=3600)
        self.tape_src = make_rse('TAPESRC', 'tapesrc.example.org', tape=True)
        # A tape whose files are only staged in place (Rucio's STAGEIN requests).
        self.stage = make_rse('STAGE', 'stage.example.org', tape=True, staging_required=True)
        # Dedicated storages for the cases that limit or ban one.
        self.slow = make_rse('SLOWSRC', 'slowsrc.example.org')
        self.banned = make_rse('BANNED', 'banned.example.org')


def adler32_of(text):
    return '%08x' % (zlib.adler32(text.encode()) & 0xffffffff)


def did(stem, size=1048576, seconds=1, extra=''):
    """A file name whose mock query makes a good transfer: source size and checksum, the
    destination's size after the copy, a copy of `seconds`. Returns (name, adler32)."""
    checksum = adler32_of(stem)
    return (f'{stem}?size={size}&size_post={size}&checksum={checksum}&time={seconds}{extra}',
            checksum)


def register(name, checksum, rses, size=1048576, paths=None):
    """The DID and its source replicas (`paths`: rse -> replica path, for non-default URLs)."""
    for rse in rses:
        entry = {'scope': SCOPE, 'name': name, 'bytes': size, 'adler32': checksum}
        if paths and rse in paths:
            entry['path'] = paths[rse]
        add_replicas(rse_id=rse.id, files=[entry], account=ACCOUNT)


def queue(name, checksum, dest, size=1048576, activity='User Subscriptions', priority=3,
          rule_id=None, request_type=RequestType.TRANSFER):
    """A QUEUED transfer request as the rule engine creates it; returns its RequestWithSources."""
    attributes = {
        'activity': activity, 'source_replica_expression': None, 'lifetime': None,
        'ds_scope': None, 'ds_name': None, 'bytes': size, 'md5': None, 'adler32': checksum,
        'priority': priority, 'allow_tape_source': True,
    }
    [created] = request_core.queue_requests([{
        'dest_rse_id': dest.id, 'request_type': request_type, 'scope': SCOPE,
        'name': name, 'rule_id': rule_id or uuid.uuid4().hex, 'attributes': attributes,
        'retry_count': 0, 'account': ACCOUNT,
    }])
    return RequestWithSources(
        id_=created['id'], request_type=request_type, rule_id=created['rule_id'],
        scope=SCOPE, name=name, md5=None, adler32=checksum, byte_count=size,
        activity=activity, attributes=attributes, previous_attempt_id=None, dest_rse=dest,
        account=ACCOUNT, retry_count=0, priority=priority, transfertool=None)


def intermediate(rws, dest):
    """The request of an intermediate hop, as `_create_transfer_definitions` makes it (no id:
    Rucio creates it in the database when the path is chosen)."""
    return RequestWithSources(
        id_=None, request_type=rws.request_type, rule_id=None, scope=rws.scope, name=rws.name,
        md5=rws.md5, adler32=rws.adler32, byte_count=rws.byte_count, activity=rws.activity,
        attributes={
            'activity': rws.activity, 'source_replica_expression': None, 'lifetime': None,
            'ds_scope': None, 'ds_name': None, 'bytes': rws.byte_count, 'md5': rws.md5,
            'adler32': rws.adler32, 'priority': None, 'allow_tape_source': True,
        },
        previous_attempt_id=None, dest_rse=dest, account=rws.account, retry_count=0,
        priority=rws.priority, transfertool=rws.transfertool)


FACTORY = ProtocolFactory()


def hop(sources, dest, rws):
    """One DirectTransfer: `sources` is a list of (rse, replica path or None)."""
    (first_rse, first_path), *others = sources
    transfer = DirectTransferImplementation(
        source=RequestSource(rse=first_rse, file_path=first_path, scheme='mock'),
        destination=TransferDestination(rse=dest, scheme='mock'),
        rws=rws, protocol_factory=FACTORY, operation_src=TPC_READ, operation_dest=TPC_WRITE)
    for rse, path in others:
        transfer.sources.append(RequestSource(rse=rse, file_path=path, scheme='mock'))
    return transfer


def submit(paths, group_bulk=200, **transfertool_kwargs):
    """The submitter's steps after path selection. Returns the transfertool it used.

    `group_bulk` as sites run the submitter (`--group-bulk`): Rucio's default of 1 would also
    cut multihop jobs down to their first hop."""
    by_builder, no_host = assign_paths_to_transfertool_and_create_hops(
        {path[-1].rws.request_id: [path] for path in paths},
        default_tombstone_delay=0, transfertools=['fts3'], logger=log)
    assert not no_host, f'no transfertool for {no_host}'
    assert len(by_builder) == 1, f'one FTS expected, got {list(by_builder)}'
    [(builder, chosen)] = by_builder.items()
    tt = builder.make_transfertool(logger=log, group_bulk=group_bulk, **transfertool_kwargs)
    assert isinstance(tt, FTS3Transfertool), tt
    assert tt.external_host == ARGS.fts, tt.external_host
    for job in tt.group_into_submit_jobs(chosen):
        submit_transfer(transfertool_obj=tt, transfers=job['transfers'],
                        job_params=job['job_params'], timeout=30, logger=log)
    return tt


def request(request_id):
    return request_core.get_request(request_id)


def state(request_id):
    return request(request_id)['state']


def submitted(request_id):
    """The FTS job id of a request Rucio submitted (fails if it is not SUBMITTED)."""
    req = request(request_id)
    assert req['state'] == RequestState.SUBMITTED, \
        f"request {request_id} is {req['state']} ({req['err_msg']})"
    assert req['external_host'] == ARGS.fts
    return req['external_id']


def poll(request_ids):
    """One pass of the poller over these requests (its query, then its handler)."""
    transfers = [t for t in request_core.get_and_mark_next(
        rse_collection=Topology(), request_type=[RequestType.TRANSFER, RequestType.STAGEIN],
        state=[RequestState.SUBMITTED], limit=1000, mode_all=True, hash_variable='id')
        if t['request_id'] in request_ids]
    if transfers:
        poller._handle_requests(
            transfers, fts_bulk=100, multi_vo=False, timeout=30, transfertool='fts3',
            transfer_stats_manager=STATS, oidc_support=False, logger=log)


def final(*request_ids):
    """A wait condition: poll, then true when no request is waiting on FTS any more."""
    def ready():
        poll(set(request_ids))
        return all(state(r) in FINAL_REQUEST_STATES for r in request_ids)
    ready.__name__ = f'requests {", ".join(request_ids)} final'
    ready.describe = lambda: describe(request_ids)
    return ready


def describe(request_ids):
    """Where requests stand, in Rucio and in FTS: what a timed-out case reports."""
    lines = []
    jobs = set()
    for r in request_ids:
        req = request(r)
        lines.append(f"  request {r}: {req['state']}, job {req['external_id']}, "
                     f"err_msg {req['err_msg']!r}")
        if req['external_id']:
            jobs.add(req['external_id'])
    tt = FTS3Transfertool(ARGS.fts, logger=log)
    for job_id in sorted(jobs):
        try:
            job = fts_job(tt, job_id)
            files = [(f['file_id'], f['file_state'], f['reason']) for f in fts_files(tt, job_id)]
            lines.append(f"  FTS job {job_id}: {job['job_state']}, files {files}")
        except Exception as error:
            lines.append(f'  FTS job {job_id}: {error}')
    return '\n'.join(lines)


def fts_job(tt, job_id):
    [job] = tt.query([job_id])
    return job


def fts_files(tt, job_id):
    return tt.query([job_id], details=True)


def after(seconds):
    """A wait condition: true once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    def ready():
        return time.monotonic() >= deadline
    ready.__name__ = f'{seconds} s'
    return ready


def job_in(tt, job_id, *states):
    def ready():
        return fts_job(tt, job_id)['job_state'] in states
    ready.__name__ = f'job {job_id} in {states}'
    return ready


def expect_state(request_id, expected, err_contains=None):
    req = request(request_id)
    assert req['state'] == expected, \
        f"request {request_id}: {req['state']} ({req['err_msg']}), expected {expected}"
    if err_contains is not None:
        assert err_contains in (req['err_msg'] or ''), \
            f"request {request_id}: err_msg {req['err_msg']!r} lacks {err_contains!r}"
    return req


def reports(tt, job_id, request_ids):
    """bulk_query for one job, with each report initialised (the status-report mapping)."""
    reqs = {r: request(r) for r in request_ids}
    result = tt.bulk_query({job_id: reqs})[job_id]
    assert isinstance(result, dict), f'bulk_query of {job_id}: {result!r}'
    with db_session(DatabaseOperationType.READ) as session:
        for report in result.values():
            assert isinstance(report, FTS3ApiTransferStatusReport), report
            report.initialize(session, logger=log)
    return result


# ---- the cases ----

CASES = []


def case(expected_warnings=()):
    """Register a case: a generator that yields wait conditions (callables) and asserts."""
    def register_case(fn):
        fn.expected_warnings = [re.compile(w, re.S) for w in expected_warnings]
        CASES.append(fn)
        return fn
    return register_case


@case()
def single_file_checksum_both_priority_activity(lab):
    name, ck = did('single-both', seconds=10)
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.disk2, activity='Data Consolidation', priority=4)
    tt = submit([[hop([(lab.disk1, None)], lab.disk2, rws)]],
                max_time_in_queue={'default': 168})
    assert 'delegation' in tt.version(), tt.version()
    job_id = submitted(rws.request_id)
    job = fts_job(tt, job_id)
    assert job['priority'] == 4, job['priority']
    assert job['max_time_in_queue'], job['max_time_in_queue']
    assert job['verify_checksum'] in ('b', 'both'), job['verify_checksum']
    assert job['job_type'] == 'N', job['job_type']
    rucio_metadata = {'issuer': 'rucio', 'multi_sources': False,
                      'overwrite_when_only_on_disk': False}
    assert rucio_metadata.items() <= job['job_metadata'].items(), job['job_metadata']
    [f] = fts_files(tt, job_id)
    assert f['activity'] == 'Data Consolidation', f['activity']
    assert f['scitag'] == 2 << 6 | 17, f['scitag']
    assert f['checksum'].lower() == f'adler32:{ck}', f['checksum']
    assert f['file_metadata']['request_id'] == rws.request_id, f['file_metadata']
    assert f['source_surl'] == f'mock://disk1.example.org:123{PREFIX}/test/' + \
        f['source_surl'].split(f'{PREFIX}/test/', 1)[1], f['source_surl']
    # Rucio raises the priority of a live job (its `update_priority`).
    reply = tt.update_priority(job_id, 5)
    assert reply['http_status'] == '200 Ok', reply
    assert fts_job(tt, job_id)['priority'] == 5
    yield final(rws.request_id)
    req = expect_state(rws.request_id, RequestState.DONE)
    assert req['started_at'] and req['transferred_at'], req
    assert req['source_rse_id'] == lab.disk1.id


@case()
def single_file_checksum_target(lab):
    # The source's mock checksum is wrong: only a 'target' check lets the copy through.
    name, ck = did('single-target')
    register(name, ck, [lab.nock], paths={lab.nock: '/elsewhere/single-target?size=1048576'
                                          '&checksum=deadbeef'})
    rws = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.nock, '/elsewhere/single-target?size=1048576&checksum=deadbeef')],
                      lab.disk2, rws)]])
    job_id = submitted(rws.request_id)
    job = fts_job(tt, job_id)
    assert job['verify_checksum'] in ('t', 'target'), job['verify_checksum']
    assert 'ipv4' in (job['internal_job_params'] or ''), job['internal_job_params']
    yield final(rws.request_id)
    expect_state(rws.request_id, RequestState.DONE)


@case(expected_warnings=[r'will use expected transfer id .*409 Conflict'])
def deterministic_job_id(lab):
    name, ck = did('deterministic')
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.disk2)
    path = [hop([(lab.disk1, None)], lab.disk2, rws)]
    config_core.set('conveyor', 'use_deterministic_id', 'True')
    try:
        tt = submit([path])
    finally:
        config_core.remove_option('conveyor', 'use_deterministic_id')
    assert tt.deterministic_id, 'the configuration did not reach the transfertool'
    job_id = submitted(rws.request_id)
    whoami = tt.whoami()
    expected = uuid.uuid5(uuid.uuid5(uuid.UUID(whoami['base_id']), whoami['vos'][0]),
                          rws.request_id)
    assert job_id == str(expected), f'{job_id} != {expected}'
    assert job_id == tt._FTS3Transfertool__get_deterministic_id(rws.request_id)
    # The same seed again (a submitter that died before recording the id): ftsd answers 409,
    # and Rucio, which only looks at successful answers, goes on with the id it expects.
    [job] = tt.group_into_submit_jobs([path])
    assert tt.submit(job['transfers'], job['job_params']) == job_id
    assert any('409 Conflict' in msg and 'sid provided by the user is duplicated' in msg
               for _, msg in CAPTURED.get('deterministic_job_id', [])), CAPTURED
    yield final(rws.request_id)
    expect_state(rws.request_id, RequestState.DONE)


@case()
def bulk_job_one_file_failing(lab):
    rule = uuid.uuid4().hex
    good, ck1 = did('bulk-good')
    bad, ck2 = did('bulk-bad')
    register(good, ck1, [lab.disk1])
    register(bad, ck2, [lab.disk1], paths={lab.disk1: '/gone/bulk-bad?errno=2'})
    r1 = queue(good, ck1, lab.disk2, rule_id=rule)
    r2 = queue(bad, ck2, lab.disk2, rule_id=rule)
    tt = submit([[hop([(lab.disk1, None)], lab.disk2, r1)],
                 [hop([(lab.disk1, '/gone/bulk-bad?errno=2')], lab.disk2, r2)]])
    job_id = submitted(r1.request_id)
    assert submitted(r2.request_id) == job_id, 'Rucio did not group the two files in one job'
    yield final(r1.request_id, r2.request_id)
    assert fts_job(tt, job_id)['job_state'] == 'FINISHEDDIRTY'
    expect_state(r1.request_id, RequestState.DONE)
    expect_state(r2.request_id, RequestState.FAILED, err_contains='TRANSFER_FAILED')


@case()
def multi_source_failover(lab):
    name, ck = did('msrc-failover')
    bad_path = '/gone/msrc-failover?errno=2'
    register(name, ck, [lab.disk1], paths={lab.disk1: bad_path})
    register(name, ck, [lab.disk3])
    rws = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.disk1, bad_path), (lab.disk3, None)], lab.disk2, rws)]])
    job_id = submitted(rws.request_id)
    job = fts_job(tt, job_id)
    assert job['job_type'] == 'R', job['job_type']
    assert job['job_metadata']['multi_sources'] is True, job['job_metadata']
    yield final(rws.request_id)
    assert fts_job(tt, job_id)['job_state'] == 'FINISHED'
    req = expect_state(rws.request_id, RequestState.DONE)
    # Rucio finds which replica FTS used from the source URL FTS reports.
    assert req['source_rse_id'] == lab.disk3.id, (req['source_rse_id'], lab.disk3.id)


@case()
def multi_source_all_failing(lab):
    name, ck = did('msrc-allfail')
    paths = {lab.disk1: '/gone/msrc-allfail-1?errno=2', lab.disk3: '/gone/msrc-allfail-3?errno=2'}
    register(name, ck, [lab.disk1, lab.disk3], paths=paths)
    rws = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.disk1, paths[lab.disk1]), (lab.disk3, paths[lab.disk3])],
                      lab.disk2, rws)]])
    job_id = submitted(rws.request_id)
    yield final(rws.request_id)
    assert fts_job(tt, job_id)['job_state'] == 'FAILED'
    expect_state(rws.request_id, RequestState.FAILED, err_contains='TRANSFER_FAILED')


def multihop_path(lab, stem, dest, first_source_path=None, extra=''):
    name, ck = did(stem, extra=extra)
    register(name, ck, [lab.disk1], paths={lab.disk1: first_source_path} if first_source_path
             else None)
    last = queue(name, ck, dest)
    first = intermediate(last, lab.disk3)
    path = [hop([(lab.disk1, first_source_path)], lab.disk3, first), hop([(lab.disk3, None)],
                                                                         dest, last)]
    return path, first, last


@case()
def multihop_success(lab):
    path, first, last = multihop_path(lab, 'mh-ok', lab.disk2)
    tt = submit([path])
    assert first.request_id, 'Rucio did not create the intermediate request'
    job_id = submitted(last.request_id)
    assert submitted(first.request_id) == job_id
    job = fts_job(tt, job_id)
    assert job['job_type'] == 'H', job['job_type']
    assert job['job_metadata'].get('multihop') is True, job['job_metadata']
    yield final(first.request_id, last.request_id)
    assert fts_job(tt, job_id)['job_state'] == 'FINISHED'
    expect_state(first.request_id, RequestState.DONE)
    expect_state(last.request_id, RequestState.DONE)


@case()
def multihop_failed_first_hop(lab):
    path, first, last = multihop_path(lab, 'mh-fail', lab.disk2,
                                      first_source_path='/gone/mh-fail?errno=2')
    tt = submit([path])
    job_id = submitted(last.request_id)
    yield job_in(tt, job_id, 'FAILED', 'FINISHED', 'FINISHEDDIRTY', 'CANCELED')
    assert fts_job(tt, job_id)['job_state'] == 'FAILED'
    # The status report of the unused hop: FAILED, with Rucio's own reason.
    by_request = reports(tt, job_id, [first.request_id, last.request_id])
    assert by_request[first.request_id].state == RequestState.FAILED
    assert by_request[last.request_id].state == RequestState.FAILED
    assert by_request[last.request_id]._reason == 'Unused hop in multi-hop', \
        by_request[last.request_id]._reason
    yield final(first.request_id, last.request_id)
    expect_state(first.request_id, RequestState.FAILED, err_contains='TRANSFER_FAILED')
    expect_state(last.request_id, RequestState.FAILED, err_contains='Unused hop in multi-hop')


@case()
def staging_from_tape(lab):
    name, ck = did('staged')
    path_on_tape = '/tape/staged?size=1048576&checksum=' + ck + '&staging_time=1'
    register(name, ck, [lab.tape_src], paths={lab.tape_src: path_on_tape})
    rws = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.tape_src, path_on_tape)], lab.disk2, rws)]])
    job_id = submitted(rws.request_id)
    job = fts_job(tt, job_id)
    assert job['bring_online'] == 43200, job['bring_online']
    [f] = fts_files(tt, job_id)
    assert f['file_metadata']['src_type'] == 'TAPE', f['file_metadata']
    yield final(rws.request_id)
    req = expect_state(rws.request_id, RequestState.DONE)
    assert req['staging_started_at'] and req['staging_finished_at'], req


@case()
def stagein_request(lab):
    # Rucio's STAGEIN request: the file is brought online in place (source = destination).
    name, ck = did('stagein')
    path_on_tape = f'/tape/stagein?size=1048576&checksum={ck}&staging_time=1'
    register(name, ck, [lab.stage], paths={lab.stage: path_on_tape})
    rws = queue(name, ck, lab.stage, request_type=RequestType.STAGEIN)
    transfer = StageinTransferImplementation(
        source=RequestSource(rse=lab.stage, file_path=path_on_tape, scheme='mock'),
        destination=TransferDestination(rse=lab.stage, scheme='mock'),
        rws=rws, protocol_factory=FACTORY, operation_src=TPC_READ, operation_dest=TPC_WRITE)
    tt = submit([[transfer]])
    job_id = submitted(rws.request_id)
    [f] = fts_files(tt, job_id)
    assert f['source_surl'] == f['dest_surl'], f
    assert fts_job(tt, job_id)['bring_online'] == 43200
    yield final(rws.request_id)
    req = expect_state(rws.request_id, RequestState.DONE)
    assert req['staging_started_at'] and req['staging_finished_at'], req


@case()
def multihop_to_tape_with_archive_timeout(lab):
    # Issue 23: the intermediate hop was archived too and the job never ended.
    path, first, last = multihop_path(lab, 'mh-tape', lab.tape, extra='&archiving_time=1')
    tt = submit([path])
    job_id = submitted(last.request_id)
    job = fts_job(tt, job_id)
    assert job['archive_timeout'] == 3600, job['archive_timeout']
    assert job['job_type'] == 'H', job['job_type']
    files = fts_files(tt, job_id)
    assert [f['file_metadata']['dst_type'] for f in files] == ['DISK', 'TAPE'], files
    yield final(first.request_id, last.request_id)
    assert fts_job(tt, job_id)['job_state'] == 'FINISHED'
    expect_state(first.request_id, RequestState.DONE)
    expect_state(last.request_id, RequestState.DONE)


@case()
def tape_destination_already_holding_the_file(lab):
    # Rucio asks tape destinations for `dst_file_report`. A copy already on tape with the right
    # size and checksum ends DONE although FTS failed it; a different one stays FAILED, marked
    # to be overwritten next time (`overwrite_corrupted_files`).
    config_core.set('transfers', 'overwrite_corrupted_files', 'True')
    rule = uuid.uuid4().hex
    on_tape = '&exists=1&size_pre=1048576&user.status=ONLINE_AND_NEARLINE'
    good, ck1 = did('on-tape-good', extra=on_tape)
    stem = 'on-tape-corrupt'
    ck2 = adler32_of(stem)
    corrupt = f'{stem}?size=1048576&checksum=deadbeef&time=1{on_tape}'
    source_path = f'/disk/{stem}?size=1048576&checksum={ck2}'
    register(good, ck1, [lab.disk1])
    register(corrupt, ck2, [lab.disk1], paths={lab.disk1: source_path})
    r1 = queue(good, ck1, lab.tape, rule_id=rule)
    r2 = queue(corrupt, ck2, lab.tape, rule_id=rule)
    tt = submit([[hop([(lab.disk1, None)], lab.tape, r1)],
                 [hop([(lab.disk1, source_path)], lab.tape, r2)]])
    job_id = submitted(r1.request_id)
    assert submitted(r2.request_id) == job_id
    job = fts_job(tt, job_id)
    assert job['dst_file_report'] is True, job
    yield job_in(tt, job_id, 'FAILED', 'FINISHED', 'FINISHEDDIRTY', 'CANCELED')
    reports_by_file = {f['file_metadata']['request_id']: f['file_metadata'].get('dst_file')
                       for f in fts_files(tt, job_id)}
    assert reports_by_file[r1.request_id] == {
        'file_size': 1048576, 'checksum_type': 'ADLER32', 'checksum_value': ck1,
        'file_on_tape': True, 'file_on_disk': True}, reports_by_file
    yield final(r1.request_id, r2.request_id)
    expect_state(r1.request_id, RequestState.DONE)
    req = expect_state(r2.request_id, RequestState.FAILED,
                       err_contains='Destination file exists and overwrite is not enabled')
    assert req['attributes'].get('overwrite') is True, req['attributes']


def lost_request(lab, stem):
    """A request Rucio believes FTS has, under a job id FTS never saw."""
    name, ck = did(stem)
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.disk2)
    transfer = hop([(lab.disk1, None)], lab.disk2, rws)
    transfer_core.mark_submitting(transfer, external_host=ARGS.fts, logger=log)
    transfer_core.set_transfers_state(
        [transfer], state=RequestState.SUBMITTED, submitted_at=datetime.datetime.utcnow(),
        external_host=ARGS.fts, external_id=str(uuid.uuid4()), transfertool='fts3', logger=log)
    return rws


@case()
def unknown_job_ids_are_lost(lab):
    # In a bulk with a known job: 207, the unknown one is lost, the known one polled.
    name, ck = did('lost-neighbour')
    register(name, ck, [lab.disk1])
    known = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.disk1, None)], lab.disk2, known)]])
    known_job = submitted(known.request_id)
    lost = lost_request(lab, 'lost-bulk')
    lost_job = submitted(lost.request_id)
    reply = requests.get(f'{ARGS.fts}/jobs/{known_job},{lost_job}?files=file_state',
                         verify=False, cert=tt.cert)
    assert reply.status_code == 207, reply.status_code
    poll({known.request_id, lost.request_id})
    expect_state(lost.request_id, RequestState.LOST, err_contains='lost')
    # Alone: 404, lost too.
    alone = lost_request(lab, 'lost-single')
    alone_job = submitted(alone.request_id)
    reply = requests.get(f'{ARGS.fts}/jobs/{alone_job}', verify=False, cert=tt.cert)
    assert reply.status_code == 404, reply.status_code
    poll({alone.request_id})
    expect_state(alone.request_id, RequestState.LOST, err_contains='lost')
    yield final(known.request_id)
    expect_state(known.request_id, RequestState.DONE)


@case()
def cancel_active_and_submitted(lab):
    se = 'mock://slowsrc.example.org'
    # One transfer at a time out of this storage: the second job waits in SUBMITTED.
    fts = FTS3Transfertool(ARGS.fts, logger=log)
    fts.set_se_config(se, outbound_max_active=1, staging=5)
    se_config = fts.get_se_config(se)
    assert se_config['se_info']['outbound_max_active'] == 1, se_config
    # Rucio names the VO of its staging limit after its policy package.
    assert se_config['operations'] == {'generic': {'staging': 5}}, se_config
    running, ck1 = did('cancel-active', seconds=120)
    waiting, ck2 = did('cancel-submitted', seconds=120)
    register(running, ck1, [lab.slow])
    register(waiting, ck2, [lab.slow])
    r1 = queue(running, ck1, lab.disk2)
    tt = submit([[hop([(lab.slow, None)], lab.disk2, r1)]])
    active_job = submitted(r1.request_id)
    yield job_in(tt, active_job, 'ACTIVE')
    r2 = queue(waiting, ck2, lab.disk2)
    submit([[hop([(lab.slow, None)], lab.disk2, r2)]])
    queued_job = submitted(r2.request_id)
    yield after(2)  # two scheduling cycles: it must still wait
    assert fts_job(tt, queued_job)['job_state'] == 'SUBMITTED'
    for job_id in (queued_job, active_job):
        reply = tt.cancel([job_id])
        assert reply['job_state'] == 'CANCELED', reply
        assert reply['http_status'] == '200 Ok', reply
    yield final(r1.request_id, r2.request_id)
    expect_state(r1.request_id, RequestState.FAILED)
    expect_state(r2.request_id, RequestState.FAILED)


@case()
def cancel_and_priority_of_a_finished_job(lab):
    name, ck = did('finished')
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.disk2)
    tt = submit([[hop([(lab.disk1, None)], lab.disk2, rws)]])
    job_id = submitted(rws.request_id)
    yield final(rws.request_id)
    expect_state(rws.request_id, RequestState.DONE)
    reply = tt.cancel([job_id])
    assert reply['http_status'] == '304 Not Modified', reply
    assert reply['job_state'] == 'FINISHED', reply
    reply = tt.update_priority(job_id, 1)
    assert reply['http_status'] == '304 Not Modified', reply


@case(expected_warnings=[r'Failed to submit transfer to .*is banned',
                         r'Failed to submit a job with error .*No transfer id returned'])
def ban_and_unban_a_storage(lab):
    se = 'mock://banned.example.org'
    fts = FTS3Transfertool(ARGS.fts, logger=log)
    assert fts.set_se_status(se, 'downtime', ban=True, timeout=60) == 0
    [ban] = [b for b in fts.list_se_status() if b['se'] == se]
    assert ban['status'].upper().startswith('WAIT'), ban
    # Submissions towards a banned storage are refused; Rucio records the failure.
    name, ck = did('to-banned')
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.banned)
    submit([[hop([(lab.disk1, None)], lab.banned, rws)]])
    expect_state(rws.request_id, RequestState.SUBMISSION_FAILED)
    assert fts.set_se_status(se, '', ban=False) == 0
    assert not [b for b in fts.list_se_status() if b['se'] == se]
    # And accepted again once unbanned.
    name, ck = did('to-unbanned')
    register(name, ck, [lab.disk1])
    rws = queue(name, ck, lab.banned)
    submit([[hop([(lab.disk1, None)], lab.banned, rws)]])
    submitted(rws.request_id)
    yield final(rws.request_id)
    expect_state(rws.request_id, RequestState.DONE)


# ---- a cooperative runner: cases wait concurrently, one Python thread, one SQLite writer ----

CASE_TIMEOUT = 180  # seconds; the slowest case needs about 20 s on a loaded machine
TICK = 0.5


def unexpected_warnings(fn):
    return [(level, msg) for level, msg in CAPTURED.get(fn.__name__, [])
            if not any(w.search(msg) for w in fn.expected_warnings)]


def run(selected):
    lab = Lab()
    live = {}  # name -> [generator, wait condition, deadline]
    results = {}
    for fn in selected:
        live[fn.__name__] = [fn(lab), None, time.monotonic() + CASE_TIMEOUT]

    def step(name, entry):
        CURRENT['case'] = name
        try:
            entry[1] = next(entry[0])
        except StopIteration:
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
        finally:
            CURRENT['case'] = None

    for name, entry in list(live.items()):
        step(name, entry)
    while any(name not in results for name in live):
        for name, entry in live.items():
            if name in results:
                continue
            CURRENT['case'] = name
            try:
                ready = entry[1]()
            except Exception:
                results[name] = traceback.format_exc()
                continue
            finally:
                CURRENT['case'] = None
            if ready:
                step(name, entry)
            elif time.monotonic() > entry[2]:
                results[name] = f'timed out waiting for {entry[1].__name__}'
                if hasattr(entry[1], 'describe'):
                    CURRENT['case'] = name
                    results[name] += '\n' + entry[1].describe()
                    CURRENT['case'] = None
        time.sleep(TICK)

    failed = 0
    for fn in selected:
        why = results[fn.__name__]
        if why is None:
            noise = unexpected_warnings(fn)
            if noise:
                why = 'Rucio logged:\n' + '\n'.join(f'{lvl}: {msg}' for lvl, msg in noise)
        if why is None:
            print(f'ok {fn.__name__}')
        else:
            failed += 1
            print(f'FAIL {fn.__name__}: {why}')
    stray = CAPTURED.get(None)
    if stray:
        failed += 1
        print('FAIL outside any case, Rucio logged:\n' +
              '\n'.join(f'{lvl}: {msg}' for lvl, msg in stray))
    return failed


def main():
    build_database()
    names = {fn.__name__ for fn in CASES}
    unknown = set(ARGS.cases) - names
    if unknown:
        sys.exit(f'unknown cases {sorted(unknown)}; known: {sorted(names)}')
    selected = [fn for fn in CASES if not ARGS.cases or fn.__name__ in ARGS.cases]
    failed = run(selected)
    print(f'{len(selected) - failed} of {len(selected)} cases passed (log: {LOG_FILE})')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
