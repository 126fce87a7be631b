//! Optimizer simulation (issue 7): the optimizer core against a shared-capacity link in
//! virtual time, the reference algorithm with persistent history against the memoryless
//! (3.14) variant and the probing variant. Four simulated hours per variant: capacity C for
//! two hours, then C/2. Prints the Markdown table of `BENCHMARKS.md`.
//!
//! Run: `cargo bench --bench optimizer_sim`.

use std::time::Instant;

use ftsd::engine::optimizer::{
    core::History,
    sim::{self, Summary},
};

fn fmt(s: &Summary) -> String {
    format!(
        "{:.3} C | {}..{} (σ {:.1}) | {} ({:.1} %)",
        s.steady_throughput,
        s.steady_range.0,
        s.steady_range.1,
        s.steady_stddev,
        s.failures,
        100.0 * s.failure_share
    )
}

fn main() {
    println!(
        "| variant | time to 90 % C | climb (0–1 h): throughput, actives, failures | steady (1–2 h): throughput, actives (σ), failures | after the drop to C/2 (2–2.5 h) | settled at C/2 (2.5–4 h) | wall time |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, history) in [
        ("persistent (3.13, default)", History::Persistent),
        ("memoryless (3.14)", History::Memoryless),
        ("probing (rejected)", History::Probing),
    ] {
        let scenario = sim::reference_scenario(history);
        let started = Instant::now();
        let trace = sim::run(&scenario);
        let wall = started.elapsed();
        let c = scenario.link.bandwidth;
        let h = 3600;
        let climb = sim::summarize(&trace, c, 0, h);
        let steady = sim::summarize(&trace, c, h, 2 * h);
        let drop = sim::summarize(&trace, c / 2.0, 2 * h, 2 * h + h / 2);
        let settled = sim::summarize(&trace, c / 2.0, 2 * h + h / 2, 4 * h);
        println!(
            "| {name} | {} s | {} | {} | {} | {} | {:.0} ms |",
            climb.time_to_90.map_or("never".into(), |t| t.to_string()),
            fmt(&climb),
            fmt(&steady),
            fmt(&drop),
            fmt(&settled),
            wall.as_secs_f64() * 1000.0
        );
    }
}
