//! Compiles the store's record format from `proto/` with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .bytes(["."])
        .compile_protos(&["proto/oclagl/store/v1/record.proto"], &["proto"])?;
    Ok(())
}
