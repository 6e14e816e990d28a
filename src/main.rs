use clap::Parser;
use reserve_operator::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print!("{}", reserve_operator::crd::crds_yaml()),
        Command::Run(_) => unimplemented!(),
    }
}
