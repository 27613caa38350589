//! The items `manifest!` generates, at the place of the call:
//!
//! - `MANIFEST`: the checked manifest as a `telemetry_protocol::compiled`
//!   static (hidden), and `builder()`, which starts a handle from it;
//! - per event, a function named like the event that starts an event value,
//!   and a module of the same name holding `NAME`, `MIN_TIER`, one enum per
//!   enum prop and `Event`, whose setters take only what the prop declares
//!   and whose `record()` hands it to `Telemetry::track`;
//! - the `From`/`TryFrom` bridges asked for.
//!
//! Recording goes through the public string API, so generated code needs
//! nothing private of `telemetry-client`; the types make the undeclared
//! impossible to write, and the run-time checks stay as a second line.

use std::collections::BTreeMap;
use std::path::Path;

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use telemetry_protocol::Manifest;
use telemetry_protocol::Tier;
use telemetry_protocol::manifest::{EventSpec, PropKind};

use crate::names::{camel, snake};
use crate::{Bridge, error};

/// Every generated item.
pub(crate) fn items(
    manifest: &Manifest,
    file: &Path,
    bridges: &[Bridge],
) -> syn::Result<TokenStream> {
    let file = file.to_string_lossy();
    let project = &manifest.project;
    let endpoint = &manifest.endpoint;
    let tiers = manifest.tier_text.iter().map(|(tier, text)| {
        let tier = tier_tokens(*tier);
        quote!((#tier, #text))
    });
    let identity = manifest.identity.iter().map(|(name, field)| {
        let (description, max_len) = (&field.description, field.max_len);
        quote!((#name, #description, #max_len))
    });
    let declared: Vec<(&String, &EventSpec)> =
        manifest.events.iter().filter(|(_, e)| !e.builtin).collect();
    let statics = declared
        .iter()
        .map(|(name, event)| compiled_event(name, event));
    let mut events = Vec::new();
    for (name, event) in &declared {
        events.push(event_items(name, event)?);
    }
    let mut bridge_items = Vec::new();
    for bridge in bridges {
        bridge_items.push(bridge_impl(manifest, bridge)?);
    }
    let builder_doc = format!(
        " Starts configuring the telemetry handle of `{project}` from its \
         manifest, checked when this crate was compiled. Call `build()` first \
         thing in `main`."
    );
    Ok(quote! {
        // Makes cargo rebuild the host when the manifest changes.
        const _: &[u8] = include_bytes!(#file);

        /// The manifest, checked at compile time. Not part of the API.
        #[doc(hidden)]
        #[allow(dead_code, unreachable_pub)]
        pub static MANIFEST: ::telemetry_client::macro_support::CompiledManifest =
            ::telemetry_client::macro_support::CompiledManifest {
                format: ::telemetry_client::macro_support::FORMAT,
                project: #project,
                endpoint: #endpoint,
                tiers: &[#(#tiers),*],
                events: &[#(#statics),*],
                identity: &[#(#identity),*],
            };

        #[doc = #builder_doc]
        #[allow(dead_code, unreachable_pub)]
        pub fn builder() -> ::telemetry_client::Builder {
            ::telemetry_client::Telemetry::compiled_builder(&MANIFEST)
        }

        #(#events)*
        #(#bridge_items)*
    })
}

fn tier_tokens(tier: Tier) -> TokenStream {
    let variant = format_ident!("{}", camel(tier.as_str()));
    quote!(::telemetry_client::Tier::#variant)
}

fn compiled_event(name: &str, event: &EventSpec) -> TokenStream {
    let description = &event.description;
    let min_tier = tier_tokens(event.min_tier);
    let props = event.props.iter().map(|(prop, spec)| {
        let description = &spec.description;
        let kind = match &spec.kind {
            PropKind::Enum { values } => {
                quote!(::telemetry_client::macro_support::CompiledKind::Enum(&[#(#values),*]))
            }
            PropKind::Bool => quote!(::telemetry_client::macro_support::CompiledKind::Bool),
            PropKind::Bucket { bounds, unit } => {
                let unit = match unit {
                    Some(u) => quote!(::core::option::Option::Some(#u)),
                    None => quote!(::core::option::Option::None),
                };
                quote!(::telemetry_client::macro_support::CompiledKind::Bucket {
                    bounds: &[#(#bounds),*],
                    unit: #unit,
                })
            }
            PropKind::Version => quote!(::telemetry_client::macro_support::CompiledKind::Version),
        };
        quote!(::telemetry_client::macro_support::CompiledProp {
            name: #prop,
            description: #description,
            kind: #kind,
        })
    });
    quote!(::telemetry_client::macro_support::CompiledEvent {
        name: #name,
        description: #description,
        min_tier: #min_tier,
        props: &[#(#props),*],
    })
}

/// The name of the generated enum of an enum prop. `Event` is the event
/// value's own type, so a prop called `event` gets `EventValue`.
fn enum_name(prop: &str) -> Ident {
    let name = camel(prop);
    let name = if name == "Event" {
        "EventValue".to_owned()
    } else {
        name
    };
    Ident::new(&name, Span::call_site())
}

/// The variants of an enum prop, by value, refusing two values that would
/// become the same variant.
fn variants(event: &str, prop: &str, values: &[String]) -> syn::Result<Vec<(String, Ident)>> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for value in values {
        let name = camel(value);
        if let Some(other) = seen.insert(name.clone(), value) {
            return Err(error(format!(
                "values `{other}` and `{value}` of `{event}.{prop}` both become the Rust \
                 variant `{name}`; rename one of them in the manifest"
            )));
        }
        out.push((value.clone(), Ident::new(&name, Span::call_site())));
    }
    Ok(out)
}

fn event_items(name: &str, event: &EventSpec) -> syn::Result<TokenStream> {
    let module = snake(name);
    let description = &event.description;
    let min_tier = tier_tokens(event.min_tier);
    let fn_doc = format!(
        " Starts a `{name}` event: {description} (sent from `{}` up). Set its \
         props, then call `record()`.",
        event.min_tier
    );
    let mod_doc = format!(" The `{name}` event's types: {description}");
    let mut seen_types: BTreeMap<String, &str> = BTreeMap::new();
    let mut enums = Vec::new();
    let mut fields = Vec::new();
    let mut setters = Vec::new();
    let mut inputs = Vec::new();
    for (prop, spec) in &event.props {
        let field = snake(prop);
        // `record` is the event value's own method.
        let setter = if prop == "record" {
            format_ident!("record_")
        } else {
            field.clone()
        };
        let prop_doc = format!(" `{prop}` ({}): {}", spec.kind, spec.description);
        match &spec.kind {
            PropKind::Enum { values } => {
                let ty = enum_name(prop);
                if let Some(other) = seen_types.insert(ty.to_string(), prop) {
                    return Err(error(format!(
                        "props `{other}` and `{prop}` of `{name}` both become the Rust enum `{ty}`; \
                         rename one of them in the manifest"
                    )));
                }
                let variants = variants(name, prop, values)?;
                let docs = variants.iter().map(|(v, _)| format!(" `{v}`"));
                let idents: Vec<&Ident> = variants.iter().map(|(_, i)| i).collect();
                let strs = variants.iter().map(|(v, _)| v);
                let count = variants.len();
                let enum_doc = format!(" The values of `{name}.{prop}`: {}", spec.description);
                enums.push(quote! {
                    #[doc = #enum_doc]
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
                    pub enum #ty {
                        #(#[doc = #docs] #idents,)*
                    }

                    impl #ty {
                        /// Every value, in the manifest's order.
                        pub const ALL: [#ty; #count] = [#(#ty::#idents),*];

                        /// The value as the manifest writes it.
                        pub const fn as_str(self) -> &'static str {
                            match self {
                                #(#ty::#idents => #strs,)*
                            }
                        }
                    }
                });
                fields.push(quote!(#field: ::core::option::Option<#ty>));
                setters.push(quote! {
                    #[doc = #prop_doc]
                    pub fn #setter(mut self, value: impl ::core::convert::Into<#ty>) -> Self {
                        self.#field = ::core::option::Option::Some(value.into());
                        self
                    }
                });
                inputs.push(quote! {
                    self.#field.map(|v| (#prop, ::telemetry_client::PropInput::from(v.as_str())))
                });
            }
            PropKind::Bool => {
                fields.push(quote!(#field: ::core::option::Option<bool>));
                setters.push(quote! {
                    #[doc = #prop_doc]
                    pub fn #setter(mut self, value: bool) -> Self {
                        self.#field = ::core::option::Option::Some(value);
                        self
                    }
                });
                inputs.push(quote! {
                    self.#field.map(|v| (#prop, ::telemetry_client::PropInput::Bool(v)))
                });
            }
            PropKind::Bucket { .. } => {
                fields.push(quote!(#field: ::core::option::Option<f64>));
                setters.push(quote! {
                    #[doc = #prop_doc]
                    #[doc = ""]
                    #[doc = " Any number; only the bucket it falls in is sent."]
                    pub fn #setter(mut self, value: impl ::telemetry_client::macro_support::Number) -> Self {
                        self.#field = ::core::option::Option::Some(value.to_f64());
                        self
                    }
                });
                inputs.push(quote! {
                    self.#field.map(|v| (#prop, ::telemetry_client::PropInput::Number(v)))
                });
            }
            PropKind::Version => {
                fields.push(quote!(#field: ::core::option::Option<&'t str>));
                setters.push(quote! {
                    #[doc = #prop_doc]
                    #[doc = ""]
                    #[doc = " A version such as `1.2.3`; anything else is dropped and counted at run time."]
                    pub fn #setter(mut self, value: &'t str) -> Self {
                        self.#field = ::core::option::Option::Some(value);
                        self
                    }
                });
                inputs.push(quote! {
                    self.#field.map(|v| (#prop, ::telemetry_client::PropInput::from(v)))
                });
            }
        }
    }
    let field_names: Vec<Ident> = event.props.keys().map(|p| snake(p)).collect();
    let prop_count = event.props.len();
    Ok(quote! {
        #[doc = #fn_doc]
        #[allow(dead_code, unreachable_pub)]
        pub fn #module(telemetry: &::telemetry_client::Telemetry) -> #module::Event<'_> {
            #module::Event::__new(telemetry)
        }

        #[doc = #mod_doc]
        #[allow(dead_code, unreachable_pub)]
        pub mod #module {
            /// The event's name in the manifest.
            pub const NAME: &str = #name;
            /// The lowest level at which it is recorded.
            pub const MIN_TIER: ::telemetry_client::Tier = #min_tier;

            #(#enums)*

            /// One event, recorded by [`Event::record`]; props left unset are not sent.
            #[must_use = "an event is recorded only by `record()`"]
            #[derive(Debug, Clone)]
            pub struct Event<'t> {
                __telemetry: &'t ::telemetry_client::Telemetry,
                #(#fields,)*
            }

            impl<'t> Event<'t> {
                #[doc(hidden)]
                pub fn __new(telemetry: &'t ::telemetry_client::Telemetry) -> Self {
                    Event {
                        __telemetry: telemetry,
                        #(#field_names: ::core::option::Option::None,)*
                    }
                }

                #(#setters)*

                /// Records the event with the props set so far. Infallible,
                /// like `Telemetry::track`, and free when telemetry is off.
                pub fn record(self) {
                    if self.__telemetry.level() == ::telemetry_client::Tier::Off {
                        return;
                    }
                    let props: [::core::option::Option<(&str, ::telemetry_client::PropInput)>; #prop_count] =
                        [#(#inputs),*];
                    self.__telemetry.track(NAME, props.into_iter().flatten());
                }
            }
        }
    })
}

fn bridge_impl(manifest: &Manifest, bridge: &Bridge) -> syn::Result<TokenStream> {
    let at = |message: String| syn::Error::new_spanned(&bridge.prop, message);
    let (event, prop) = (bridge.event.to_string(), bridge.prop.to_string());
    let event = event.trim_start_matches("r#");
    let prop = prop.trim_start_matches("r#");
    let spec = manifest
        .events
        .get(event)
        .filter(|e| !e.builtin)
        .ok_or_else(|| {
            syn::Error::new_spanned(
                &bridge.event,
                format!("the manifest declares no event `{event}`"),
            )
        })?;
    let values = match spec.props.get(prop).map(|p| &p.kind) {
        Some(PropKind::Enum { values }) => values,
        Some(kind) => {
            return Err(at(format!(
                "`{event}.{prop}` is a {kind} prop, not an enum"
            )));
        }
        None => return Err(at(format!("event `{event}` declares no prop `{prop}`"))),
    };
    let module = snake(event);
    let ty = enum_name(prop);
    let host = &bridge.ty;
    let idents: Vec<Ident> = variants(event, prop, values)?
        .into_iter()
        .map(|(_, i)| Ident::new(&i.to_string(), host_span(host)))
        .collect();
    if bridge.partial {
        return Ok(quote_spanned! {host_span(host)=>
            impl ::core::convert::TryFrom<&#host> for #module::#ty {
                type Error = ::telemetry_client::macro_support::NotInManifest;
                fn try_from(value: &#host) -> ::core::result::Result<Self, Self::Error> {
                    #[allow(unreachable_patterns)]
                    match value {
                        #(#host::#idents { .. } => ::core::result::Result::Ok(#module::#ty::#idents),)*
                        _ => ::core::result::Result::Err(::telemetry_client::macro_support::NotInManifest),
                    }
                }
            }
        });
    }
    Ok(quote_spanned! {host_span(host)=>
        impl ::core::convert::From<&#host> for #module::#ty {
            fn from(value: &#host) -> Self {
                match value {
                    #(#host::#idents { .. } => #module::#ty::#idents,)*
                }
            }
        }

        impl ::core::convert::From<#host> for #module::#ty {
            fn from(value: #host) -> Self {
                Self::from(&value)
            }
        }
    })
}

/// Where errors about the host's enum point: at its path in the macro call.
fn host_span(host: &syn::Path) -> Span {
    host.segments
        .last()
        .map_or_else(Span::call_site, |s| s.ident.span())
}
