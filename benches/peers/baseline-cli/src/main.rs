//! The reference CLI of the overhead and size benchmarks: one greeting, no
//! telemetry. Every peer prints exactly the same line, so the only difference
//! between them and this binary is the telemetry they carry.

fn main() {
    println!("Hello, world!");
}
