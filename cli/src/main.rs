//! Entry point of `sftctl`; all logic lives in the library.

fn main() {
    std::process::exit(sftctl::run());
}
