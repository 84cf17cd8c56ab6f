//! `kubewire serve` as a standalone binary, for trying the crate before it is wired into
//! `kubewire`: `cargo run -p kubewire-serve --example serve -- --http-port 8080 --udp-port 8081`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "serve",
    about = "A test server in the spirit of agnhost netexec"
)]
struct Cli {
    #[command(flatten)]
    serve: kubewire_serve::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match kubewire_serve::run(cli.serve).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let causes: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", causes.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}
