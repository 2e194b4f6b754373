//! `mock-upstream`: the provider mock used by e2e tests, benchmarks and the local demo.
//! See `tollbooth_tests::mock` for the protocols and the behaviour directives.

fn main() -> std::process::ExitCode {
    tollbooth_tests::mock::cli::main(std::env::args().skip(1))
}
