//! `kubewire-cni`: the CNI plugin binary. Environment + stdin in, result or error object out.

use std::io::Read;
use std::process::ExitCode;

use kubewire_cni::error::{CniError, code};
use kubewire_cni::plugin;
use kubewire_cni::version::SUPPORTED;

fn main() -> ExitCode {
    let about = || {
        eprintln!(
            "kubewire-cni {}: the kubewire CNI plugin, run by a container runtime with CNI_COMMAND \
             and friends in the environment and the network configuration on stdin.\n\
             CNI protocol versions supported: {}",
            env!("CARGO_PKG_VERSION"),
            SUPPORTED.join(", ")
        );
    };
    if std::env::args()
        .skip(1)
        .any(|a| a == "--help" || a == "-h" || a == "--version")
    {
        about();
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("CNI_COMMAND").is_none() {
        // Still a spec error object (code 4), so a runtime that forgot the variable is told.
        about();
    }
    let mut stdin = Vec::new();
    let outcome = match std::env::var_os("CNI_COMMAND")
        .map_or(Ok(0), |_| std::io::stdin().read_to_end(&mut stdin))
    {
        Ok(_) => plugin::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => Err(CniError::new(code::IO, format!("cannot read stdin: {e}"))),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(mut e) => {
            if let Some(v) = plugin::request_version(&stdin) {
                e = e.for_version(v.as_str());
            }
            println!("{}", e.to_json());
            eprintln!("kubewire-cni: {}", e.msg);
            ExitCode::FAILURE
        }
    }
}
