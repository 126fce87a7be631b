//! The first hour of a new user, run for real: every command of the README's ` ```sh ` blocks,
//! in order, then every command `ftsd serve` prints in its start-up banner, in one shell as a
//! user would type them, against a fresh `ftsd serve` with its dev PKI, with the real `fts3`
//! CLI (`FTS3_CLIENT_BIN`), curl and XRootD. A command that fails fails the test with the
//! shell's transcript.
//!
//! As printed: the commands are not rewritten, with two exceptions, both listed here and
//! reported in the transcript. `cargo run --release -- ` is run as `ftsd ` (the binary cargo
//! built for this test, on `PATH`, the same sources); commands that would install software,
//! run the test suite itself or need an RPM host are not run, each with its reason in
//! [`NOT_RUN`]. A command not covered by either runs; a new kind of command in the README is
//! run by default.
//!
//! Fresh machine: an empty home and working directory, `PATH` with only the system, the `ftsd`
//! binary and the `fts3` client. Run as root (CI), the shell is an unprivileged user (`nobody`;
//! XRootD refuses root, and a new user is not root; it keeps only CAP_DAC_READ_SEARCH, see
//! [`Shell::start`]) in its own network namespace, so the README's fixed ports (8446, 8443,
//! 8444, 1094, 1095) are free even while other tests or services run; run as another user, it
//! is that user on the host's network.
//!
//! Also checked: the README's first screen has exactly two set-up commands, and commands quoted
//! in its prose (`curl ...`, `fts-rest-...`) are ones its blocks run.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, process::CommandExt as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use crate::common::fts3_client_bin;

const README: &str = include_str!("../../README.md");
/// How long one command may take. The slowest are the blocking submissions (a few seconds) and
/// the first `ftsd serve` (the dev PKI's RSA keys); the margin is for a loaded 2-core machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);
/// How long `ftsd serve` may take to print its banner.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);
/// The unprivileged user the shell runs as when the test runs as root.
const NOBODY: u32 = 65534;
/// Ends each command's output in the transcript: `<marker> <exit status>`.
const DONE: &str = "__first_hour_done__";

/// Commands the test does not run, by prefix, with the reason.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "make test",
        "the test suite itself, of which this test is a part",
    ),
    (
        "make rpm",
        "run by `make test` after `cargo test` (packaging/test-rpm.sh)",
    ),
    (
        "make test-rpm",
        "run by `make test` after `cargo test` (packaging/test-rpm.sh)",
    ),
    (
        "cargo install --path .",
        "the test puts the ftsd cargo built for it (the same sources) on PATH",
    ),
    (
        "python3 -m venv ~/fts3-client",
        "installs the fts3 client from PyPI: CI installs it (.ci/run, FTS3_CLIENT_BIN), put on PATH",
    ),
    (
        "dnf install",
        "an RPM host: packaging/test-rpm.sh installs the package into a throwaway root",
    ),
    (
        "setfacl",
        "an RPM host: packaging/test-rpm.sh installs the package into a throwaway root",
    ),
    (
        "runuser -u ftsd",
        "an RPM host: packaging/test-rpm.sh runs the installed check-config and service",
    ),
    (
        "systemctl",
        "an RPM host: packaging/test-rpm.sh checks the unit (systemd-analyze)",
    ),
];

/// Commands run as another one: (prefix, replacement).
const RUN_AS: &[(&str, &str)] = &[("cargo run --release -- ", "ftsd ")];

/// One command of a README block: its text (continuation lines and here-documents included)
/// and the README line it starts on.
#[derive(Debug, Clone, PartialEq)]
struct Snippet {
    line: usize,
    text: String,
}

/// The commands of every ` ```sh ` block, in order, one list per block.
fn sh_blocks(markdown: &str) -> Vec<Vec<Snippet>> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if line.trim_end() != "```sh" {
            continue;
        }
        let mut body = Vec::new();
        for (n, line) in lines.by_ref() {
            if line.trim_end() == "```" {
                break;
            }
            body.push((n + 1, line));
        }
        blocks.push(commands(&body));
    }
    blocks
}

/// Split shell lines into commands: a line ending in `\` continues, a here-document runs to its
/// terminator; blank and comment-only lines are skipped.
fn commands(lines: &[(usize, &str)]) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (start, first) = lines[i];
        i += 1;
        if first.trim().is_empty() || first.trim_start().starts_with('#') {
            continue;
        }
        let mut text = first.to_string();
        while text.ends_with('\\') && i < lines.len() {
            text.push('\n');
            text.push_str(lines[i].1);
            i += 1;
        }
        if let Some(terminator) = heredoc_terminator(&text) {
            while i < lines.len() {
                let line = lines[i].1;
                text.push('\n');
                text.push_str(line);
                i += 1;
                if line == terminator {
                    break;
                }
            }
        }
        out.push(Snippet { line: start, text });
    }
    out
}

/// `EOF` of `cat > f <<EOF` (or `<<'EOF'`, `<<-EOF`).
fn heredoc_terminator(command: &str) -> Option<String> {
    let at = command.find("<<")?;
    let word = command[at + 2..].trim_start_matches('-').trim_start();
    let word: String = word
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// The command without a trailing `# comment` (outside quotes), trimmed.
fn without_comment(command: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in command.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return command[..i].trim_end().to_string();
            }
            _ => {}
        }
        previous = c;
    }
    command.trim_end().to_string()
}

/// The commands the banner of `ftsd serve` shows: its indented lines, continuations joined.
fn banner_commands(banner: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continued = false;
    for line in banner.lines() {
        if continued {
            if let Some(last) = out.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else if let Some(command) = line.strip_prefix("  ") {
            out.push(command.to_string());
        }
        continued = line.ends_with('\\');
    }
    out
}

/// A bash that reads commands from the test, as a user's terminal session: variables and
/// exports carry over from one command to the next, background jobs keep running. Dropping it
/// kills everything it started (one process group).
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    transcript: String,
}

impl Shell {
    fn start(work: &Path, path: &str, as_nobody: bool) -> Shell {
        let mut command = if as_nobody {
            let user = format!("--reuid={NOBODY}");
            let group = format!("--regid={NOBODY}");
            // One capability is kept, to read (not write) everywhere: the fts3 client's venv
            // may point into root's home (pyenv), which an unprivileged user cannot enter.
            let drop = [
                "setpriv",
                &user,
                &group,
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
                "--",
            ];
            let isolated = Command::new("unshare")
                .args(["-n", "true"])
                .status()
                .is_ok_and(|s| s.success());
            if isolated {
                let mut c = Command::new("unshare");
                c.args([
                    "-n",
                    "--",
                    "sh",
                    "-c",
                    "ip link set lo up && exec \"$@\"",
                    "sh",
                ]);
                c.args(drop);
                c
            } else {
                eprintln!("first hour: no network namespace here; running on the host's ports");
                let mut c = Command::new(drop[0]);
                c.args(&drop[1..]);
                c
            }
        } else {
            Command::new("bash")
        };
        if as_nobody {
            command.args(["bash", "--noprofile", "--norc"]);
        } else {
            command.args(["--noprofile", "--norc"]);
        }
        let home = work.join("home");
        command
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .current_dir(work)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("bash starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut shell = Shell {
            child,
            stdin,
            lines,
            transcript: String::new(),
        };
        // Error messages belong in the transcript too.
        shell.ok("exec 2>&1; id -un");
        shell
    }

    /// Run one command (its stdin empty, as for a command typed at a prompt); its exit status
    /// and output.
    fn run(&mut self, command: &str) -> (i32, String) {
        self.transcript.push_str(&format!("$ {command}\n"));
        let script = format!("{{ {command}\n}} </dev/null; echo \"{DONE} $?\"\n");
        self.stdin.write_all(script.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // Output without a final newline puts the marker at the end of its line.
                    if let Some(at) = line.find(DONE) {
                        let (last, marker) = line.split_at(at);
                        if !last.is_empty() {
                            self.transcript.push_str(&format!("{last}\n"));
                            output.push_str(last);
                        }
                        let status = marker[DONE.len()..].trim().parse().unwrap_or(-1);
                        self.transcript.push_str(&format!("[exit {status}]\n"));
                        return (status, output);
                    }
                    self.transcript.push_str(&line);
                    self.transcript.push('\n');
                    output.push_str(&line);
                    output.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no end after {COMMAND_DEADLINE:?}: {command}\n{}",
                        self.transcript
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the shell ended during: {command}\n{}", self.transcript)
                }
            }
        }
    }

    /// Run a command that must succeed; its output.
    fn ok(&mut self, command: &str) -> String {
        let (status, output) = self.run(command);
        assert_eq!(
            status, 0,
            "failed (exit {status}): {command}\n--- transcript ---\n{}",
            self.transcript
        );
        output
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Wait until `ftsd serve`'s output shows its banner (the service answers then); the banner.
fn wait_for_banner(log: &Path, errors: &Path, shell: &Shell) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find("ftsd is running on ") {
            // The banner ends with an empty line.
            let banner = &text[at..];
            if let Some(end) = banner.find("\n\n") {
                return banner[..end].to_string();
            }
        }
        assert!(
            start.elapsed() < SERVE_DEADLINE,
            "ftsd serve printed no banner within {SERVE_DEADLINE:?}\n--- stdout ---\n{text}\n--- \
             stderr ---\n{}\n--- transcript ---\n{}",
            std::fs::read_to_string(errors).unwrap_or_default(),
            shell.transcript
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readme_and_the_banner_run_as_printed() {
    // What the extraction sees, checked first (no tools needed).
    let blocks = sh_blocks(README);
    let first = blocks.first().expect("the README has sh blocks");
    let first_screen: Vec<String> = first.iter().map(|s| without_comment(&s.text)).collect();
    assert_eq!(
        first_screen,
        ["cargo run --release -- serve", "make test"],
        "the README's first screen: exactly two set-up commands"
    );
    let all: Vec<Snippet> = blocks.into_iter().flatten().collect();
    for span in README.split('`').skip(1).step_by(2) {
        if span.starts_with("curl ") || span.starts_with("fts-rest-") {
            assert!(
                all.iter().any(|s| s.text.starts_with(span)),
                "the README quotes `{span}` in its prose, but no sh block runs it"
            );
        }
    }

    let Some(client) = fts3_client_bin() else {
        return;
    };
    if !crate::peers::available(&["xrootd", "curl"]) {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("ftsd-first-hour-")
        .tempdir()
        .unwrap();
    let work = work.path();
    let (bin, home) = (work.join("bin"), work.join("home"));
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&home).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_ftsd"), bin.join("ftsd")).unwrap();
    let as_nobody = running_as_root();
    if as_nobody {
        for dir in [work, &bin, &home, &bin.join("ftsd")] {
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        bin.display(),
        client.display()
    );
    let mut shell = Shell::start(work, &path, as_nobody);

    let (log, errors) = (work.join("ftsd-serve.out"), work.join("ftsd-serve.err"));
    let mut serving: Option<String> = None;
    let mut banner = String::new();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for snippet in &all {
        let mut command = without_comment(&snippet.text);
        let starts = |prefix: &str| {
            command == prefix
                || command
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(char::is_whitespace))
        };
        if let Some((_, why)) = NOT_RUN.iter().find(|(p, _)| starts(p)) {
            shell.transcript.push_str(&format!(
                "# README line {}: not run ({why}): {command}\n",
                snippet.line
            ));
            continue;
        }
        for (prefix, replacement) in RUN_AS {
            if let Some(rest) = command.strip_prefix(prefix) {
                command = format!("{replacement}{rest}");
            }
        }
        if command.starts_with("ftsd serve") {
            // It runs until stopped: in the background, as in its own terminal.
            if serving.as_deref() == Some(command.as_str()) {
                shell.transcript.push_str(&format!(
                    "# README line {}: already running: {command}\n",
                    snippet.line
                ));
                continue;
            }
            assert!(
                serving.is_none(),
                "a second, different ftsd serve: {command}"
            );
            shell.ok(&format!(
                "{command} > {} 2> {} &",
                log.display(),
                errors.display()
            ));
            banner = wait_for_banner(&log, &errors, &shell);
            serving = Some(command);
            continue;
        }
        let output = shell.ok(&command);
        outputs.push((command, output));
    }
    assert!(serving.is_some(), "the README starts ftsd serve");

    // What the README says these commands do, they did.
    let output_of = |prefix: &str| -> Vec<&str> {
        outputs
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .map(|(_, o)| o.as_str())
            .collect()
    };
    let whoami = output_of("fts-rest-whoami");
    assert!(
        whoami
            .iter()
            .any(|o| o.contains("User DN: /O=ftsd/OU=dev/CN=ftsd dev user")),
        "{}",
        shell.transcript
    );
    let blocking = output_of("fts-rest-transfer-submit -s https://localhost:8446 -b");
    assert_eq!(blocking.len(), 2, "{}", shell.transcript);
    for output in blocking {
        assert!(
            output.contains("Job finished with state FINISHED"),
            "{}",
            shell.transcript
        );
    }
    assert!(
        output_of("cmp ")
            .iter()
            .any(|o| o.contains("the copy is identical")),
        "{}",
        shell.transcript
    );

    // Then the banner's commands, in the same shell.
    let printed = banner_commands(&banner);
    assert!(
        printed.len() >= 5,
        "banner commands: {printed:#?}\n{banner}"
    );
    for command in &printed {
        let output = shell.ok(command);
        if command.starts_with("curl ") && command.ends_with("/whoami") {
            assert!(
                output.contains("\"user_dn\":\"/O=ftsd/OU=dev/CN=ftsd dev user\""),
                "{output}"
            );
        }
        if command.starts_with("fts-rest-transfer-submit") {
            assert!(
                output.contains("Job finished with state FINISHED"),
                "{output}"
            );
        }
    }
    eprintln!("{}", shell.transcript);
}

#[test]
fn readme_extraction_joins_continuations_and_here_documents() {
    let text = "intro\n```sh\n# a comment\nfoo a \\\n  b   # note\n\ncat > f <<EOF\nx \\\ny\nEOF\nbar 'x # y'\n```\n```text\nnot this\n```\n";
    let blocks = sh_blocks(text);
    assert_eq!(blocks.len(), 1);
    let texts: Vec<&str> = blocks[0].iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "foo a \\\n  b   # note",
            "cat > f <<EOF\nx \\\ny\nEOF",
            "bar 'x # y'"
        ]
    );
    assert_eq!(blocks[0][0].line, 4);
    assert_eq!(without_comment(texts[0]), "foo a \\\n  b");
    assert_eq!(without_comment(texts[2]), "bar 'x # y'");
    assert_eq!(
        banner_commands("ftsd is running\nCall it:\n  curl a \\\n      b\nor\n  whoami\n"),
        ["curl a \\\n      b", "whoami"]
    );
}
