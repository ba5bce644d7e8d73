//! `cargo run -p uniffi-bindgen -- generate --library target/debug/libassent_companion.so --language swift --out-dir …`:
//! the bindings come from the compiled library's metadata, with the uniffi version the SDK links.

fn main() {
    uniffi::uniffi_bindgen_main()
}
