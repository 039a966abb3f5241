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
    after_help = "Examples:\n  tads demo\n  tads demo --dir /tmp/tads-demo --hosts 50 --days 7\n  TADS_PG_URL=postgres://tads@127.0.0.1/ops tads demo"
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
    println!(
        "\ndemo done in {:.1}s. Open the results in SQL:\n  tads sql --data {data} --data {scores} --models {models}",
        clock.elapsed().as_secs_f64()
    );
    Ok(())
}
