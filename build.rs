//! Records the target triple, so `--version` can say which build this is (x86_64 or arm64).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=LAMBDA_SHELL_EXTENSION_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
