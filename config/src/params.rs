//! Expanded parameter values with typed getters.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::registry::{self, Kind, ParamDef};
use crate::value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0} is not known to this role")]
    Missing(String),
    #[error("parameter {name}: \"{value}\": {why}")]
    Bad {
        name: String,
        value: String,
        why: String,
    },
}

/// Checks an expanded value against its parameter's type.
pub(crate) fn check_value(def: &ParamDef, v: &str) -> Result<(), String> {
    match def.kind {
        Kind::Str | Kind::List => Ok(()),
        Kind::Bool => value::parse_bool(v).map(|_| ()),
        Kind::Int { min, max } => value::parse_int(v, min, max).map(|_| ()),
        Kind::Duration { unit, min_ms } => {
            let d = value::parse_duration(v, unit)?;
            if (d.value.as_millis() as u64) < min_ms {
                return Err(format!("must be at least {min_ms}ms"));
            }
            Ok(())
        }
        Kind::Size { min } => {
            if value::parse_size(v)? < min {
                return Err(format!("must be at least {min} bytes"));
            }
            Ok(())
        }
        Kind::Enum(choices) => {
            if choices.contains(&v) {
                Ok(())
            } else {
                Err(format!("expected one of: {}", choices.join(", ")))
            }
        }
        Kind::TlsProtocols => crate::tlsproto::protocols(v).map(|_| ()),
        Kind::TlsGrade => crate::tlsproto::grade(v),
        Kind::TlsExclude => crate::tlsproto::exclusions(v).map(|_| ()),
        Kind::Path => {
            if v.is_empty() {
                Err("a path is required".into())
            } else if v.contains(['\n', '\0']) {
                Err("bad character in path".into())
            } else {
                Ok(())
            }
        }
    }
}

/// A role's view of the configuration: expanded values by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self { map }
    }

    /// Builds a view from (name, value) pairs received from the master,
    /// checking every value against the registry.
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(
        pairs: I,
    ) -> Result<Self, ParamError> {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let def = registry::lookup(&name).ok_or_else(|| ParamError::Missing(name.clone()))?;
            check_value(def, &value).map_err(|why| ParamError::Bad {
                name: name.clone(),
                value: value.clone(),
                why,
            })?;
            map.insert(name, value);
        }
        Ok(Self { map })
    }

    /// The parameters a role receives (its slice of the configuration).
    pub fn slice(&self, role: crate::Role) -> Vec<(String, String)> {
        self.map
            .iter()
            .filter(|(n, _)| registry::lookup(n).is_some_and(|d| d.roles & role.bit() != 0))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub fn get(&self, name: &str) -> Result<&str, ParamError> {
        self.map
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ParamError::Missing(name.into()))
    }

    /// A string value; empty when the role did not receive it.
    pub fn str(&self, name: &str) -> &str {
        self.map.get(name).map_or("", String::as_str)
    }

    fn typed<T>(
        &self,
        name: &str,
        f: impl FnOnce(&ParamDef, &str) -> Result<T, String>,
    ) -> Result<T, ParamError> {
        let v = self.get(name)?;
        let def = registry::lookup(name).ok_or_else(|| ParamError::Missing(name.into()))?;
        f(def, v).map_err(|why| ParamError::Bad {
            name: name.into(),
            value: v.into(),
            why,
        })
    }

    pub fn bool(&self, name: &str) -> Result<bool, ParamError> {
        self.typed(name, |_, v| value::parse_bool(v))
    }

    pub fn int(&self, name: &str) -> Result<i64, ParamError> {
        self.typed(name, |d, v| match d.kind {
            Kind::Int { min, max } => value::parse_int(v, min, max),
            _ => value::parse_int(v, i64::MIN, i64::MAX),
        })
    }

    pub fn duration(&self, name: &str) -> Result<Duration, ParamError> {
        self.typed(name, |d, v| {
            let unit = match d.kind {
                Kind::Duration { unit, .. } => unit,
                _ => "s",
            };
            value::parse_duration(v, unit).map(|d| d.value)
        })
    }

    pub fn size(&self, name: &str) -> Result<u64, ParamError> {
        self.typed(name, |_, v| value::parse_size(v))
    }

    pub fn list(&self, name: &str) -> Result<Vec<String>, ParamError> {
        self.get(name).map(value::split_list)
    }
}
