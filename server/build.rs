//! Rebuilds the server when a migration is added: `sqlx::migrate!` embeds the files it finds, and
//! without this Cargo would not notice a new file in the directory (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
