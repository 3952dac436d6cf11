//! `sqlx::migrate!` embeds the migration files at compile time; a new file
//! in a migrations folder must rebuild the crate, or it would never run.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
