//! `tads demo`: the whole pipeline on embedded defaults, in one command.

use clap::{Args, Parser};

use crate::Cli;

/// Arguments of `tads demo`.
#[derive(Debug, Args)]
#[command(
    about = "Generate, train, score and evaluate a small dataset in a local folder, and print the alerts and the quality",
    long_about = "The whole of TADS in one command, on embedded defaults (a local folder, no servers): \
generates a small labelled dataset (24 hosts, 3 days at one row a minute, about one anomaly per \
host-day) into <dir>/data, trains one robust PCA model per host into <dir>/models, scores every \
row and finds the alerts into <dir>/scores, evaluates them against the labels, and prints the \
alert summary and the quality table. Ends with the `tads sql` command that opens the results.\n\n\
With --pg or TADS_PG_URL, every step mirrors to PostgreSQL too. Running it again replaces the \
demo's own outputs (and nothing else).",
    after_help = "Examples:\n  tads demo\n  tads demo --live\n  tads demo --dir /tmp/tads-demo --hosts 50 --days 7\n  TADS_PG_URL=postgres://tads@127.0.0.1/ops tads demo"
)]
pub(crate) struct DemoArgs {
    /// Where the demo writes data/, models/ and scores/
    #[arg(long, default_value = "tads-demo", value_name = "DIR")]
    dir: String,
    /// Hosts to generate
    #[arg(long, default_value_t = 24)]
    hosts: u32,
    /// Days to generate
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Seed of the generated data
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Then follow live data: `tads generate --follow` writes 6 more hours at 720 times real
    /// time into <dir>/live while `tads watch` scores each new file into <dir>/watch (30 s)
    #[arg(long)]
    live: bool,
}

pub(crate) async fn run(args: DemoArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    let clock = std::time::Instant::now();
    let dir = args.dir.trim_end_matches('/');
    let (data, models, scores) = (
        format!("{dir}/data"),
        format!("{dir}/models"),
        format!("{dir}/scores"),
    );
    let (hosts, days, seed) = (
        args.hosts.to_string(),
        format!("{}d", args.days),
        args.seed.to_string(),
    );
    let steps: [(&str, Vec<&str>); 4] = [
        (
            "1/4 generate",
            vec![
                "generate",
                "--out",
                &data,
                "--overwrite",
                "--hosts",
                &hosts,
                "--duration",
                &days,
                "--interval",
                "1m",
                "--anomaly-rate",
                "1",
                "--seed",
                &seed,
            ],
        ),
        (
            "2/4 train one model per host",
            vec![
                "train",
                "--data",
                &data,
                "--models",
                &models,
                "--model",
                "hosts",
                "--group-by",
                "host_id",
                "--overwrite",
            ],
        ),
        (
            "3/4 score and find alerts",
            vec![
                "score",
                "--data",
                &data,
                "--models",
                &models,
                "--model",
                "hosts",
                "--out",
                &scores,
                "--overwrite",
            ],
        ),
        (
            "4/4 evaluate against the labels",
            vec!["eval", "--scored", &scores],
        ),
    ];
    for (title, argv) in steps {
        println!("\n== {title}: tads {}", argv.join(" "));
        let cli = Cli::try_parse_from(std::iter::once("tads").chain(argv.iter().copied()))?;
        crate::dispatch(cli.command, pg).await?;
    }
    if args.live {
        live(dir, &models, &hosts, &seed, args.days, pg).await?;
    }
    println!(
        "\ndemo done in {:.1}s. Open the results in SQL:\n  tads sql --data {data} --data {scores} --models {models}",
        clock.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--live`: a generator writing 6 hours after the demo's days as files of 10 minutes, at 720
/// times real time (a process of its own), and `tads watch --once` every second until it is
/// done.
async fn live(
    dir: &str,
    models: &str,
    hosts: &str,
    seed: &str,
    days: u32,
    pg: &crate::pg::PgArgs,
) -> anyhow::Result<()> {
    let (data, out) = (format!("{dir}/live"), format!("{dir}/watch"));
    // The demo's own watch output from an earlier run (its checkpoint says so) starts afresh:
    // the live data is written again under the same names.
    let out_path = std::path::Path::new(&out);
    if out_path.join(tads_jobs::watch::CHECKPOINT).exists() {
        std::fs::remove_dir_all(out_path)?;
    }
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?
        + chrono::Duration::days(i64::from(days));
    let start = start.to_rfc3339();
    let generate = [
        "generate",
        "--follow",
        "--flush",
        "10m",
        "--speed",
        "720",
        "--out",
        &data,
        "--overwrite",
        "--hosts",
        hosts,
        "--duration",
        "6h",
        "--interval",
        "1m",
        "--anomaly-rate",
        "4",
        "--seed",
        seed,
        "--start",
        &start,
    ];
    println!("\n== live 1/2: tads {}", generate.join(" "));
    let mut writer = std::process::Command::new(std::env::current_exe()?)
        .args(generate)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let watch = [
        "watch", "--data", &data, "--models", models, "--model", "hosts", "--out", &out, "--once",
        "--settle", "200ms",
    ];
    println!("== live 2/2, every second: tads {}", watch.join(" "));
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let finished = writer.try_wait()?;
        let cli = Cli::try_parse_from(std::iter::once("tads").chain(watch.iter().copied()))?;
        crate::dispatch(cli.command, pg).await?;
        match finished {
            Some(status) if status.success() => break,
            Some(status) => anyhow::bail!("the live generator failed ({status})"),
            None => {}
        }
    }
    println!("the live rounds are in {out}/rounds/ (alerts/alerts.parquet in each)");
    Ok(())
}
