//! Wire types of the EVI platform API's prompts and tools (spec `evi-platform.md` §2–§3),
//! with the enums the configs share. Configs are in [`crate::platform_config`].
//!
//! Request bodies (`Posted*`) declare every constraint the server checks that JSON Schema
//! can state (ranges, patterns, lengths, enums); the few it cannot (a tool's `parameters`
//! must parse as a JSON object, references must exist) are said in their descriptions.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use crate::enums::UnknownValue;

wire_enum! {
    /// `version_type`: a fixed version, or whatever version is the latest when read.
    VersionType { Fixed = "FIXED", Latest = "LATEST" }
}

wire_enum! {
    /// REST `tool_type` (the chat socket spells them in lower case).
    ToolType { Builtin = "BUILTIN", Function = "FUNCTION" }
}

/// Largest length of a prompt, tool or config name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// `PromptExpansionSpec`: whether EVI appends its own instructions to the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptExpansionSpec {
    /// `true` (the default) appends; `false` leaves the prompt exactly as written.
    pub enabled: Option<bool>,
}

/// `PostedPrompt`: a new prompt (its version 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedPrompt {
    /// Name shared by all versions: 1 to 256 characters, not all blank.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: String,
    /// The system prompt.
    pub text: String,
    /// Prompt expansion (default enabled).
    pub prompt_expansion: Option<PromptExpansionSpec>,
    /// Description of this version.
    pub version_description: Option<String>,
}

/// `PostedPromptVersion`: the next version of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedPromptVersion {
    /// The system prompt.
    pub text: String,
    /// Prompt expansion (default enabled).
    pub prompt_expansion: Option<PromptExpansionSpec>,
    /// Description of this version.
    pub version_description: Option<String>,
}

/// The body of a rename (`PATCH /v0/evi/{prompts,tools,configs}/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedName {
    /// The new name of every version: 1 to 256 characters, not all blank.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: String,
}

/// The body of a tool's rename (`PATCH /v0/evi/tools/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedToolName {
    /// The new function name of every version: `^[a-zA-Z0-9_-]{1,64}$`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
}

/// The body of a description change (`PATCH …/{id}/version/{version}`); `{}` or `null`
/// clears the description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedVersionDescription {
    /// The version's new description.
    pub version_description: Option<String>,
}

/// `ReturnPrompt`: one version of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPrompt {
    /// Prompt id (UUID).
    pub id: String,
    /// Version number.
    pub version: i64,
    /// `FIXED` for a prompt read by itself; in a config, how the config refers to it.
    pub version_type: VersionType,
    /// Description of this version.
    pub version_description: Option<String>,
    /// Name shared by all versions.
    pub name: String,
    /// Epoch ms when the first version was created.
    pub created_on: i64,
    /// Epoch ms when this version was created (or its description last changed).
    pub modified_on: i64,
    /// The system prompt.
    pub text: String,
    /// Prompt expansion, as posted.
    pub prompt_expansion: Option<PromptExpansionSpec>,
}

/// `ReturnPagedPrompts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPagedPrompts {
    /// Zero-based page index, as requested.
    pub page_number: i64,
    /// Page size, as requested.
    pub page_size: i64,
    /// Pages in the whole listing.
    pub total_pages: i64,
    /// The page's prompt versions.
    pub prompts_page: Vec<ReturnPrompt>,
}

/// `PostedUserDefinedTool`: a new tool (its version 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedUserDefinedTool {
    /// The function name the language model calls: `^[a-zA-Z0-9_-]{1,64}$`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    /// A JSON Schema object, as a string: it must parse as a JSON object.
    pub parameters: String,
    /// When and how the model should call the tool.
    pub description: Option<String>,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
    /// Description of this version.
    pub version_description: Option<String>,
}

/// `PostedUserDefinedToolVersion`: the next version of a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostedUserDefinedToolVersion {
    /// A JSON Schema object, as a string: it must parse as a JSON object.
    pub parameters: String,
    /// When and how the model should call the tool.
    pub description: Option<String>,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
    /// Description of this version.
    pub version_description: Option<String>,
}

/// `ReturnUserDefinedTool`: one version of a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnUserDefinedTool {
    /// Always `FUNCTION`.
    pub tool_type: ToolType,
    /// Tool id (UUID).
    pub id: String,
    /// Version number.
    pub version: i64,
    /// `FIXED` for a tool read by itself; in a config, how the config refers to it.
    pub version_type: VersionType,
    /// Description of this version.
    pub version_description: Option<String>,
    /// The function name.
    pub name: String,
    /// Epoch ms when the first version was created.
    pub created_on: i64,
    /// Epoch ms when this version was created (or its description last changed).
    pub modified_on: i64,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
    /// When and how the model should call the tool.
    pub description: Option<String>,
    /// The JSON Schema of the arguments, as a string.
    pub parameters: String,
}

/// `ReturnPagedUserDefinedTools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPagedUserDefinedTools {
    /// Zero-based page index, as requested.
    pub page_number: i64,
    /// Page size, as requested.
    pub page_size: i64,
    /// Pages in the whole listing.
    pub total_pages: i64,
    /// The page's tool versions.
    pub tools_page: Vec<ReturnUserDefinedTool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_the_wire_spellings() {
        assert_eq!(
            serde_json::to_string(&[VersionType::Fixed, VersionType::Latest]).unwrap(),
            r#"["FIXED","LATEST"]"#
        );
        assert_eq!("FUNCTION".parse::<ToolType>(), Ok(ToolType::Function));
        assert!("function".parse::<ToolType>().is_err());
    }

    #[test]
    fn a_fixture_prompt_parses() {
        let p: ReturnPrompt = serde_json::from_str(
            r#"{"id":"af699d45-2985-42cc-91b9-af9e5da3bac5","version":0,"version_type":"FIXED",
            "version_description":"","name":"Weather Assistant Prompt","created_on":1715267200693,
            "modified_on":1715267200693,"text":"You are a weather assistant."}"#,
        )
        .unwrap();
        assert_eq!(p.version_type, VersionType::Fixed);
        assert_eq!(p.prompt_expansion, None);
    }
}
