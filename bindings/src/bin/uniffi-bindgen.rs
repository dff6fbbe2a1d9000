//! The workspace's `uniffi-bindgen`, so the generator always matches the uniffi the library was
//! built with. Use `scripts/gen-bindings` rather than calling it by hand.

fn main() {
    uniffi::uniffi_bindgen_main()
}
