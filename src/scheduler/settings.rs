//! A scheduler's own section of the config file (`[slurm]`, later `[lsf]`, `[yarn]`): the adapter
//! declares its keys and how each value is checked; the config parser walks the section against
//! that schema (so every problem gets its line and column) and keeps the checked table, which
//! the adapter reads back when it is opened.

/// How one key's value is checked.
#[derive(Debug, Clone, Copy)]
pub enum SettingKind {
    /// A string; the function says what is wrong with a value, if anything.
    Text(fn(&str) -> Option<String>),
    /// A list of strings, each checked by the function.
    TextList(fn(&str) -> Option<String>),
}

/// One key of a scheduler's section.
#[derive(Debug, Clone, Copy)]
pub struct SettingKey {
    pub name: &'static str,
    pub kind: SettingKind,
}

/// A scheduler's config section: its table name and keys.
#[derive(Debug)]
pub struct SettingsSchema {
    pub section: &'static str,
    pub keys: &'static [SettingKey],
    /// The section as TOML with every key set: the config tests parse it (each adapter owns
    /// its own), and it shows users what the section looks like.
    pub example: &'static str,
}

impl SettingsSchema {
    pub fn key(&self, name: &str) -> Option<&SettingKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    pub fn key_names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|k| k.name).collect()
    }
}

/// A section's values as checked against its schema; empty when the file has none.
pub type Settings = toml::Table;

/// Anything goes (beyond not being empty).
pub fn not_empty(value: &str) -> Option<String> {
    value
        .trim()
        .is_empty()
        .then(|| "must not be empty".to_string())
}

/// Reads an adapter's typed settings from its checked section.
pub fn read<T: serde::de::DeserializeOwned + Default>(
    section: &str,
    settings: &Settings,
) -> Result<T, super::SchedulerError> {
    if settings.is_empty() {
        return Ok(T::default());
    }
    settings
        .clone()
        .try_into()
        .map_err(|e| super::SchedulerError::BadSettings {
            section: section.to_string(),
            why: e.to_string(),
        })
}
