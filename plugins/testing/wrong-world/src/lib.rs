//! A well-formed component of another world (`test:other`): the host must
//! refuse to load it as a plugin.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
