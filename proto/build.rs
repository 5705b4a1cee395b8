//! Compile the .proto files with tonic/prost at build time (no checked-in generated code), using
//! the vendored protoc so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "weft/agent/v1/agent.proto",
            "weft/workflow/v1/workflow.proto",
            "weft/events/v1/events.proto",
        ],
        &["."],
    )?;
    println!("cargo:rerun-if-changed=weft");
    Ok(())
}
