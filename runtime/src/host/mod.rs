//! Host implementations of Switchyard's own interfaces (`switchyard:gateway`).
//! The `wasi:*` interfaces come from wasmtime-wasi and wasmtime-wasi-http.

pub(crate) mod db;
pub(crate) mod kv;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package switchyard:host;
            world host {
                import switchyard:gateway/kv@0.1.0;
                import switchyard:gateway/db@0.1.0;
            }
        ",
        world: "switchyard:host/host",
        imports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub(crate) use generated::switchyard::gateway::db as db_bindings;
pub(crate) use generated::switchyard::gateway::kv as kv_bindings;
