//! `sqlx::migrate!` embeds the migration files with `include_str!`, which only tracks files that
//! already exist: rebuild when a migration is added or removed as well.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
