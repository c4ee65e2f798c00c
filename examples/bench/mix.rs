//! The realistic mix (`mix`): many callers whose tokens repeat, 20 tools, arguments that vary
//! per call, and about one call in ten denied by policy (another tenant, a missing scope).
//! This is the traffic a decision cache has to be judged on, not one repeated request.
//!
//! Callers (one RS256 token each, minted before measuring): every 20th caller belongs to
//! tenant `globex` (tenant isolation denies all its calls, 5%); of the others, every second
//! one has only `mcp:tools:weather` and is denied the 2 file tools of the 20 (half of 10%, 5%);
//! the rest have both tool scopes. Each request picks a caller, a tool and its arguments from
//! a hash of its index, so the sequence is the same in every run and every round.
//!
//! Two streams: the *first pass* (`cold`, `--mix-requests` distinct requests, sent in a cycle)
//! is every caller's token and every caller-tool pair seen for the first time, as right after
//! a start; the *steady state* (`requests`) then calls the same callers and tools with
//! arguments never sent before, in one long stream that the measured phases walk through
//! without repeating, as a running service sees them: tokens and decisions that do not depend
//! on the arguments are cached, anything a policy reads of the arguments is new.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use mcp_authz::testutil::{TestKey, shipped_policies};
use serde_json::{Value, json};

use crate::tokens::{TENANT, encoded, mint_many, scoped_claims};

/// The tools of the shipped `entities.json` the mix calls; the file tools need the
/// `mcp:tools:files` scope and a path under /srv/shared/ (`file-path-guard`).
const SHIPPED_TOOLS: [&str; 4] = ["get_forecast", "get_alerts", "read_file", "write_file"];
const FILE_TOOLS: [&str; 2] = ["read_file", "write_file"];
/// Added to the weather tool set of a copy of the shipped policies, to make 20 tools.
const EXTRA_WEATHER_TOOLS: [&str; 16] = [
    "get_radar",
    "get_humidity",
    "get_wind",
    "get_uv_index",
    "get_air_quality",
    "get_sunrise",
    "get_tides",
    "get_pollen",
    "get_snow_depth",
    "get_visibility",
    "get_pressure",
    "get_storm_tracks",
    "get_climate_normals",
    "get_marine_forecast",
    "get_lightning",
    "get_heat_index",
];
const CITIES: [&str; 8] = [
    "Paris", "Oslo", "Lagos", "Lima", "Osaka", "Perth", "Quito", "Tunis",
];
const FULL_SCOPE: &str = "mcp:connect mcp:tools:weather mcp:tools:files";
const WEATHER_SCOPE: &str = "mcp:connect mcp:tools:weather";
/// Token `sub`s of the mix start here, apart from the other contenders' tokens.
const FIRST_SUB: usize = 1_000_000;

/// Everything the mix sends, made once per run.
pub struct Mix {
    /// The first pass: framed `CheckRequest`s, sent in order (cycling).
    pub cold: Arc<Vec<Bytes>>,
    /// The status each of `cold` must get: 200 (allowed) or 403 (denied by policy).
    pub cold_expect: Arc<Vec<u16>>,
    /// The steady state: request `j` is caller and tool of `cold[j % cold.len()]` with new
    /// arguments.
    pub requests: Arc<Vec<Bytes>>,
    pub expect: Arc<Vec<u16>>,
    /// A copy of the shipped policies with the 16 extra weather tools in `entities.json`.
    pub policies: PathBuf,
    pub callers: usize,
    pub tools: usize,
    /// The share of `requests` that must be denied, by construction.
    pub planned_denied_share: f64,
}

/// What caller `c` is: its tenant and scope.
fn caller(c: usize) -> (&'static str, &'static str) {
    if c.is_multiple_of(20) {
        ("globex", FULL_SCOPE)
    } else if c % 2 == 1 {
        (TENANT, WEATHER_SCOPE)
    } else {
        (TENANT, FULL_SCOPE)
    }
}

fn tools() -> Vec<&'static str> {
    SHIPPED_TOOLS
        .iter()
        .chain(EXTRA_WEATHER_TOOLS.iter())
        .copied()
        .collect()
}

/// The status the shipped policies give `caller` calling `tool`.
fn expected(c: usize, tool: &str) -> u16 {
    let (tenant, scope) = caller(c);
    if tenant != TENANT || (FILE_TOOLS.contains(&tool) && scope == WEATHER_SCOPE) {
        403
    } else {
        200
    }
}

/// The arguments of call `i` of `tool`, varying with `a`.
fn arguments(tool: &str, i: usize, a: u64) -> Value {
    match tool {
        // `forecast-days-limit` reads `days`: 1..=16, all allowed.
        "get_forecast" => json!({"city": CITIES[(a % 8) as usize], "days": 1 + a % 16}),
        "get_alerts" => json!({"region": format!("region-{}", a % 500)}),
        "read_file" => json!({"path": format!("/srv/shared/doc-{}.txt", a % 10_000)}),
        "write_file" => json!({
            "path": format!("/srv/shared/out-{}.txt", a % 10_000),
            "content": format!("note {i}"),
        }),
        _ => json!({"location": format!("loc-{}", a % 10_000), "hours": 1 + a % 48}),
    }
}

/// Arguments of the steady state are drawn apart from the first pass's.
const STEADY_SALT: u64 = 0x0005_EED0_FA11_5EED;

/// Mints `callers` tokens with `key` for issuer `iss`, writes the policy copy under `dir` and
/// encodes `requests` first-pass requests and `steady` steady-state ones.
pub fn build(
    key: &TestKey,
    iss: &str,
    dir: &Path,
    callers: usize,
    requests: usize,
    steady: usize,
) -> Result<Mix, String> {
    let callers = callers.max(1);
    let policies = write_policies(dir)?;
    let tokens = mint_many(key, callers, |c| {
        let (tenant, scope) = caller(c);
        scoped_claims(iss, FIRST_SUB + c, tenant, scope)
    });
    if tokens.len() != callers {
        return Err(format!("minted {} of {callers} mix tokens", tokens.len()));
    }
    let tools = tools();
    let requests = requests.max(1);
    // Request `i` of the first pass, or the steady state's request `j` (`salted`): caller and
    // tool from the hash of `i`, arguments from the hash of `j` when salted.
    let encode = |i: usize, args: u64, n: usize| -> Result<(Bytes, u16), String> {
        let h = splitmix(i as u64);
        let c = (h % callers as u64) as usize;
        let tool = tools[((h >> 20) % tools.len() as u64) as usize];
        let body = json!({
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments(tool, n, args >> 36)},
        })
        .to_string();
        Ok((encoded("POST", &body, Some(&tokens[c]))?, expected(c, tool)))
    };
    let mut cold = Vec::with_capacity(requests);
    let mut cold_expect = Vec::with_capacity(requests);
    for i in 0..requests {
        let (b, e) = encode(i, splitmix(i as u64), i)?;
        cold.push(b);
        cold_expect.push(e);
    }
    let mut bodies = Vec::with_capacity(steady);
    let mut expect = Vec::with_capacity(steady);
    for j in 0..steady.max(1) {
        let (b, e) = encode(j % requests, splitmix(j as u64 ^ STEADY_SALT), requests + j)?;
        bodies.push(b);
        expect.push(e);
    }
    let denied = expect.iter().filter(|&&s| s != 200).count();
    Ok(Mix {
        planned_denied_share: denied as f64 / expect.len() as f64,
        cold: Arc::new(cold),
        cold_expect: Arc::new(cold_expect),
        requests: Arc::new(bodies),
        expect: Arc::new(expect),
        policies,
        callers,
        tools: tools.len(),
    })
}

/// `dir/mix-policies`: the shipped schema and policies, and `entities.json` with the extra
/// weather tools.
fn write_policies(dir: &Path) -> Result<PathBuf, String> {
    let from = shipped_policies();
    let to = dir.join("mix-policies");
    std::fs::create_dir_all(&to).map_err(|e| format!("`{}`: {e}", to.display()))?;
    let entries = std::fs::read_dir(&from).map_err(|e| format!("`{}`: {e}", from.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { continue };
        if name.ends_with(".cedar") || name == "schema.cedarschema" {
            std::fs::copy(&path, to.join(&name))
                .map_err(|e| format!("copying `{}`: {e}", path.display()))?;
        }
    }
    let shipped = from.join("entities.json");
    let text =
        std::fs::read_to_string(&shipped).map_err(|e| format!("`{}`: {e}", shipped.display()))?;
    let mut entities: Vec<Value> =
        serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", shipped.display()))?;
    for tool in EXTRA_WEATHER_TOOLS {
        entities.push(json!({
            "uid": {"type": "Mcp::Tool", "id": format!("demo/{tool}")},
            "attrs": {"read_only": true},
            "parents": [{"type": "Mcp::ToolSet", "id": "weather"}],
        }));
    }
    let out = to.join("entities.json");
    let json = serde_json::to_string_pretty(&entities).map_err(|e| e.to_string())?;
    std::fs::write(&out, json).map_err(|e| format!("`{}`: {e}", out.display()))?;
    Ok(to)
}

/// A well-mixed hash of `n` (splitmix64's finalizer).
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_call_in_ten_is_denied_and_every_tool_is_called() {
        let n = 20_000;
        let mut denied = 0;
        let mut seen = std::collections::HashSet::new();
        let tools = tools();
        for i in 0..n {
            let h = splitmix(i);
            let c = (h % 1000) as usize;
            let tool = tools[((h >> 20) % tools.len() as u64) as usize];
            seen.insert(tool);
            denied += usize::from(expected(c, tool) == 403);
        }
        let share = denied as f64 / n as f64;
        assert!((0.08..0.12).contains(&share), "denied share {share}");
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn the_steady_state_repeats_callers_and_tools_with_new_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let key = TestKey::rsa("mix");
        let m = build(&key, "https://idp.test", dir.path(), 40, 300, 900).unwrap();
        assert_eq!((m.cold.len(), m.requests.len()), (300, 900));
        for j in 0..900 {
            // Same caller and tool, so the same expected decision, but other bytes.
            assert_eq!(m.expect[j], m.cold_expect[j % 300]);
            assert_ne!(m.requests[j], m.cold[j % 300]);
        }
        let distinct: std::collections::HashSet<&Bytes> = m.requests.iter().collect();
        assert_eq!(distinct.len(), 900, "every steady-state request is new");
    }
}
