//! Writes the bundled quickstart data (`cargo run -p sftctl-data --example write_quickstart_data -- examples/data/quickstart`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: write_quickstart_data <dir>")?;
    sftctl_data::quickstart::write_quickstart(std::path::Path::new(&dir))?;
    Ok(())
}
