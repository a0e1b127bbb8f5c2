//! `sqlx::migrate!` embeds the migrations when the crate compiles; without this, cargo
//! would not notice a new file in `migrations/` and a build could silently lack it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
