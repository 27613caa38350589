//! `manifest!`: compiles a tool's `telemetry.toml` into a typed recording
//! API. Use it as `telemetry_client::manifest!` (feature `macros`); the
//! generated code names `::telemetry_client`, so the host must depend on that
//! crate under that name.
//!
//! The manifest is read and checked at compile time with
//! `telemetry_protocol::Manifest::parse`, the parser the collector uses. A
//! problem is a compile error at the macro call whose message starts with
//! `file:line:column`. The checked manifest is embedded as a static of
//! `telemetry_protocol::compiled` types, so the host never parses TOML for
//! its manifest at run time. See `telemetry_client`'s crate documentation for
//! what is generated.
//!
//! # Layout
//!
//! - this file: the macro's input (path and `From` bridges) and its errors;
//! - `generate`: the generated items;
//! - `names`: manifest names turned into Rust identifiers.

mod generate;
mod names;

use std::path::PathBuf;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Token};
use telemetry_protocol::Manifest;

/// Generates the typed telemetry API of the manifest at the given path,
/// relative to the crate's `Cargo.toml`, at the place of the call:
///
/// ```text
/// mod events {
///     telemetry_client::manifest!("telemetry.toml");
/// }
/// ```
///
/// Optional `From` bridges follow the path, one per enum prop, to convert a
/// host's own enum (a clap `ValueEnum`, say) whose variants are named like the
/// generated ones: `command.name = crate::Format` generates
/// `From<Format>` and `From<&Format>` for `events::command::Name` (every
/// variant must match, both ways), and `try command.name = crate::Command`
/// generates `TryFrom<&Command>`, for an enum with variants the manifest does
/// not list (every manifest value must still be a variant).
#[proc_macro]
pub fn manifest(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = syn::parse_macro_input!(input as Input);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The macro's arguments.
struct Input {
    /// The manifest's path as written.
    path: LitStr,
    /// `From` bridges.
    bridges: Vec<Bridge>,
}

/// `[try] event.prop = Type`.
pub(crate) struct Bridge {
    /// `TryFrom` instead of `From`.
    pub(crate) partial: bool,
    pub(crate) event: Ident,
    pub(crate) prop: Ident,
    pub(crate) ty: syn::Path,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let path: LitStr = input.parse()?;
        let mut bridges = Vec::new();
        if input.parse::<Option<Token![,]>>()?.is_some() {
            let list = Punctuated::<Bridge, Token![,]>::parse_terminated(input)?;
            bridges.extend(list);
        }
        Ok(Input { path, bridges })
    }
}

impl Parse for Bridge {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let partial = input.parse::<Option<Token![try]>>()?.is_some();
        let event = input.call(Ident::parse_any)?;
        input.parse::<Token![.]>()?;
        let prop = input.call(Ident::parse_any)?;
        input.parse::<Token![=]>()?;
        let ty = input.parse()?;
        Ok(Bridge {
            partial,
            event,
            prop,
            ty,
        })
    }
}

fn expand(input: &Input) -> syn::Result<proc_macro2::TokenStream> {
    let span = input.path.span();
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| syn::Error::new(span, "CARGO_MANIFEST_DIR is not set; build with cargo"))?;
    let written = input.path.value();
    let full = dir.join(&written);
    let text = std::fs::read_to_string(&full)
        .map_err(|e| syn::Error::new(span, format!("cannot read {}: {e}", full.display())))?;
    let manifest = Manifest::parse(&text).map_err(|e| {
        syn::Error::new(
            span,
            format!("{written}:{}:{}: {}", e.line, e.column, e.message),
        )
    })?;
    generate::items(&manifest, &full, &input.bridges)
}

/// An error at the macro call.
pub(crate) fn error(message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(Span::call_site(), message)
}
