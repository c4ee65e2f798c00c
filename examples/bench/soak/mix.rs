//! What the soak sends and what each request must get: caller profiles (principals, tenants,
//! scopes, groups), the MCP messages each profile sends with the status the shipped policies
//! give them, the key rotation schedule, and per key generation the tokens (a few repeated per
//! profile, RS256; a pool of distinct ones, ES256), every request encoded once with its
//! expected status.

use std::sync::Arc;

use bytes::Bytes;
use mcp_authz::testutil::{TestKey, claims, now};
use serde::Serialize;
use serde_json::json;

use crate::tokens::{RESOURCE, encoded};

/// One MCP request a profile sends, and the status it must get (200: allowed).
struct Case {
    http: &'static str,
    body: &'static str,
    expect: u16,
    /// How often it is sent relative to the profile's other cases (allows dominate real
    /// traffic; denials are the exception).
    weight: usize,
}

/// A kind of caller: its tokens all carry these claims (`sub` differs).
struct Profile {
    name: &'static str,
    tenant: &'static str,
    scope: &'static str,
    groups: &'static [&'static str],
    cases: &'static [Case],
}

const FORECAST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris","days":3}}}"#;
/// `forecast-days-limit`: at most 16 days.
const FORECAST_30_DAYS: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Oslo","days":30}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":4,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"soak","version":"1"}}}"#;
const READ_SHARED: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/shared/report.txt"}}}"#;
/// `file-path-guard`: only under /srv/shared/.
const READ_ETC: &str = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/passwd"}}}"#;
const WRITE_SHARED: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/srv/shared/out.txt","content":"soak"}}}"#;
const DELETE_EVERYTHING: &str = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"delete_everything","arguments":{}}}"#;
const READ_RESOURCE: &str = r#"{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"file:///srv/shared/notes.md"}}"#;

const fn case(http: &'static str, body: &'static str, expect: u16, weight: usize) -> Case {
    Case {
        http,
        body,
        expect,
        weight,
    }
}

/// Callers of server `demo` (tenant `acme`) and what the shipped policies say to them.
const PROFILES: &[Profile] = &[
    Profile {
        name: "forecaster",
        tenant: "acme",
        scope: "mcp:connect mcp:tools:weather",
        groups: &[],
        cases: &[
            case("POST", FORECAST, 200, 8),
            case("POST", LIST, 200, 3),
            case("POST", INITIALIZE, 200, 1),
            case("POST", FORECAST_30_DAYS, 403, 1),
            // No `mcp:tools:files`: insufficient scope.
            case("POST", READ_SHARED, 403, 1),
        ],
    },
    Profile {
        name: "filer",
        tenant: "acme",
        scope: "mcp:connect mcp:tools:files",
        groups: &[],
        cases: &[
            case("POST", READ_SHARED, 200, 4),
            case("POST", WRITE_SHARED, 200, 2),
            case("POST", READ_ETC, 403, 1),
            case("POST", FORECAST, 403, 1),
        ],
    },
    Profile {
        name: "read-only",
        tenant: "acme",
        scope: "mcp:connect mcp:tools:files",
        groups: &["read-only"],
        cases: &[
            case("POST", READ_SHARED, 200, 3),
            // `read-only-group`: write_file is not read_only.
            case("POST", WRITE_SHARED, 403, 1),
        ],
    },
    Profile {
        name: "operator",
        tenant: "acme",
        scope: "mcp:connect mcp:tools:admin",
        groups: &["break-glass"],
        cases: &[
            case("POST", DELETE_EVERYTHING, 200, 1),
            case("POST", LIST, 200, 2),
        ],
    },
    Profile {
        name: "admin-no-break-glass",
        tenant: "acme",
        scope: "mcp:connect mcp:tools:admin",
        groups: &[],
        // `dangerous-needs-break-glass`.
        cases: &[case("POST", DELETE_EVERYTHING, 403, 1)],
    },
    Profile {
        name: "viewer",
        tenant: "acme",
        scope: "mcp:connect",
        groups: &[],
        cases: &[
            case("GET", "", 200, 2),
            case("POST", READ_RESOURCE, 200, 2),
            case("POST", FORECAST, 403, 1),
        ],
    },
    Profile {
        name: "other-tenant",
        tenant: "globex",
        scope: "mcp:connect mcp:tools:weather",
        groups: &[],
        // `tenant-isolation`.
        cases: &[case("POST", FORECAST, 403, 1), case("POST", LIST, 403, 1)],
    },
    Profile {
        name: "no-mcp-scope",
        tenant: "acme",
        scope: "openid profile",
        groups: &[],
        // `session-baseline` needs `mcp:connect`.
        cases: &[case("POST", LIST, 403, 1)],
    },
];

/// Repeated tokens per profile and key generation.
const REPEATED_PER_PROFILE: usize = 3;

/// What a request is, for the report's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A token of the current key generation, one of a few per profile (cache hits).
    Repeated,
    /// A token of the current generation used about once per rotation (cache misses).
    Distinct,
    /// A token signed with the previous key while the IdP still publishes it.
    PreviousKey,
    /// A token signed with a key the IdP has withdrawn (long enough ago to be refetched): 401.
    WithdrawnKey,
    /// No `authorization`: 401.
    NoToken,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Repeated => "repeated token, current key",
            Kind::Distinct => "distinct token, current key",
            Kind::PreviousKey => "token signed with the previous key (still published)",
            Kind::WithdrawnKey => "token signed with a withdrawn key",
            Kind::NoToken => "no token",
        }
    }
}

/// A request ready to send.
#[derive(Clone)]
pub struct Request {
    pub framed: Bytes,
    pub expect: u16,
    pub what: &'static str,
}

/// The check requests of one key generation.
pub struct Generation {
    pub rsa: TestKey,
    pub ec: TestKey,
    /// Every repeated token with every case of its profile, each `weight` times.
    repeated: Vec<Request>,
    /// One request per distinct token.
    distinct: Vec<Request>,
}

impl Generation {
    /// The requests of this generation a saturation measurement may send: the allowed ones.
    pub fn allowed(&self) -> Vec<Bytes> {
        self.repeated
            .iter()
            .chain(&self.distinct)
            .filter(|r| r.expect == 200)
            .map(|r| r.framed.clone())
            .collect()
    }

    /// One request of every (profile, case) pair, for the check before load.
    pub fn each_case(&self) -> Vec<Request> {
        let mut seen = std::collections::HashSet::new();
        self.repeated
            .iter()
            .filter(|r| seen.insert(r.what))
            .cloned()
            .collect()
    }
}

fn what(profile: &Profile, case: &Case) -> &'static str {
    // A few dozen distinct strings for the whole run: leaking them keeps `Request` cheap to
    // clone and the report's labels exact.
    Box::leak(
        format!(
            "{}: {} {} (expecting {})",
            profile.name,
            case.http,
            method_of(case.body).unwrap_or_default(),
            case.expect
        )
        .into_boxed_str(),
    )
}

fn method_of(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let method = v.get("method")?.as_str()?;
    Some(match v.pointer("/params/name").and_then(|n| n.as_str()) {
        Some(name) => format!("{method} {name}"),
        None => method.to_owned(),
    })
}

/// Mints the tokens of generation `g` for `iss`: `distinct` distinct tokens. Tokens live for
/// `lifetime_s` (the whole run).
pub fn generation(
    g: usize,
    iss: &str,
    distinct: usize,
    lifetime_s: i64,
) -> Result<Generation, String> {
    let rsa = TestKey::rsa(&format!("soak-rsa-{g}"));
    let ec = TestKey::ec(&format!("soak-ec-{g}"));
    let mut repeated = Vec::new();
    for (p, profile) in PROFILES.iter().enumerate() {
        for k in 0..REPEATED_PER_PROFILE {
            let sub = format!("{}-{k}", profile.name);
            let token = rsa.token(&token_claims(iss, profile, &sub, g, p, lifetime_s));
            for case in profile.cases {
                let r = Request {
                    framed: encoded(case.http, case.body, Some(&token))?,
                    expect: case.expect,
                    what: what(profile, case),
                };
                repeated.extend(std::iter::repeat_n(r, case.weight));
            }
        }
    }
    // Distinct tokens go round the profiles and, within a profile, round its weighted cases.
    let weighted: Vec<Vec<&Case>> = PROFILES
        .iter()
        .map(|p| {
            p.cases
                .iter()
                .flat_map(|c| std::iter::repeat_n(c, c.weight))
                .collect()
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = distinct.div_ceil(threads).max(1);
    let mut minted: Vec<Result<Vec<Request>, String>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..distinct)
            .step_by(chunk)
            .map(|start| {
                let (ec, weighted) = (&ec, &weighted);
                s.spawn(move || {
                    (start..(start + chunk).min(distinct))
                        .map(|i| {
                            let p = i % PROFILES.len();
                            let profile = &PROFILES[p];
                            let cases = &weighted[p];
                            let case = cases[(i / PROFILES.len()) % cases.len()];
                            let sub = format!("{}-user-{i}", profile.name);
                            let claims = token_claims(iss, profile, &sub, g, i, lifetime_s);
                            Ok(Request {
                                framed: encoded(case.http, case.body, Some(&ec.token(&claims)))?,
                                expect: case.expect,
                                what: what(profile, case),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        for h in handles {
            minted.push(
                h.join()
                    .unwrap_or_else(|_| Err("a minting thread panicked".into())),
            );
        }
    });
    let mut distinct_requests = Vec::with_capacity(distinct);
    for part in minted {
        distinct_requests.extend(part?);
    }
    Ok(Generation {
        rsa,
        ec,
        repeated,
        distinct: distinct_requests,
    })
}

fn token_claims(
    iss: &str,
    profile: &Profile,
    sub: &str,
    g: usize,
    n: usize,
    lifetime_s: i64,
) -> serde_json::Value {
    let mut c = claims(iss, RESOURCE);
    c["sub"] = json!(sub);
    c["jti"] = json!(format!("soak-{g}-{n}-{}-{}", profile.name, now()));
    c["scope"] = json!(profile.scope);
    c["tenant"] = json!(profile.tenant);
    c["groups"] = json!(profile.groups);
    c["exp"] = json!(now() + lifetime_s);
    c
}

/// When keys are published, used and withdrawn. Rotation `k` (every `rotate` seconds from the
/// start) publishes key generation `k` beside `k - 1`; tokens are signed with `k` from
/// `margin` seconds later (mcp-authz has refreshed its key set by then); `k - 1` is withdrawn
/// half-way through the rotation, and tokens signed with it must get 401 from `margin` seconds
/// after that (mcp-authz has refreshed again).
#[derive(Clone, Copy, Serialize)]
pub struct Schedule {
    pub rotate_s: f64,
    /// The JWKS `max-age` the IdP sends: mcp-authz refreshes this often (±10%).
    pub max_age_s: u64,
    pub margin_s: f64,
}

impl Schedule {
    pub fn new(rotate_s: f64) -> Result<Self, String> {
        let max_age_s = ((rotate_s / 15.0).round() as u64).clamp(1, 5);
        // Two refresh periods and a second: a refresh that starts just before a change and one
        // delayed by a busy machine both land inside it.
        let margin_s = 2.0 * max_age_s as f64 + 1.0;
        if rotate_s < 4.0 * margin_s {
            return Err(format!(
                "`--rotate-every {rotate_s}`: at least {} seconds are needed (a key is used \
                 {margin_s}s after it is published, and refused {margin_s}s after it is \
                 withdrawn)",
                4.0 * margin_s
            ));
        }
        Ok(Self {
            rotate_s,
            max_age_s,
            margin_s,
        })
    }

    fn rotation(&self, t: f64) -> (usize, f64) {
        let k = (t.max(0.0) / self.rotate_s).floor();
        (k as usize, t - k * self.rotate_s)
    }

    /// The key generations the IdP publishes at `t`.
    pub fn published(&self, t: f64) -> Vec<usize> {
        match self.rotation(t) {
            (k, into) if k >= 1 && into < self.rotate_s / 2.0 => vec![k - 1, k],
            (k, _) => vec![k],
        }
    }

    /// The generation new tokens are signed with at `t`.
    pub fn current(&self, t: f64) -> usize {
        match self.rotation(t) {
            (k, into) if k >= 1 && into < self.margin_s => k - 1,
            (k, _) => k,
        }
    }

    /// The previous generation while its key is surely still in mcp-authz's key set (a second
    /// before the IdP withdraws it).
    pub fn previous_valid(&self, t: f64) -> Option<usize> {
        let (k, into) = self.rotation(t);
        (k >= 1 && into >= self.margin_s && into < self.rotate_s / 2.0 - 1.0).then(|| k - 1)
    }

    /// The latest withdrawn generation once mcp-authz has surely refreshed its key set since:
    /// `k - 1` late in rotation `k`, still `k - 2` early in it (until `k - 1` goes).
    pub fn withdrawn(&self, t: f64) -> Option<usize> {
        let (k, into) = self.rotation(t);
        let half = self.rotate_s / 2.0;
        if k >= 1 && into >= half + self.margin_s {
            Some(k - 1)
        } else if k >= 2 && into < half {
            Some(k - 2)
        } else {
            None
        }
    }
}

/// Every generation of the run and the tokenless request.
pub struct Mix {
    pub schedule: Schedule,
    pub generations: Vec<Generation>,
    no_token: Request,
}

/// Shares of the traffic, per 100 requests.
const REPEATED_SHARE: u64 = 70;
const DISTINCT_SHARE: u64 = 20;
const PREVIOUS_KEY_SHARE: u64 = 5;
const WITHDRAWN_KEY_SHARE: u64 = 2;
// The remaining 3: no token.

impl Mix {
    pub fn new(schedule: Schedule, generations: Vec<Generation>) -> Result<Arc<Self>, String> {
        if generations.is_empty() {
            return Err("no key generation".into());
        }
        Ok(Arc::new(Self {
            schedule,
            generations,
            no_token: Request {
                framed: encoded("POST", LIST, None)?,
                expect: 401,
                what: "anonymous POST tools/list",
            },
        }))
    }

    /// The request without a token.
    pub fn no_token(&self) -> Request {
        self.no_token.clone()
    }

    /// The share of distinct-token requests in the traffic.
    pub fn distinct_share() -> f64 {
        DISTINCT_SHARE as f64 / 100.0
    }

    fn gen_of(&self, g: usize) -> &Generation {
        let last = self.generations.len() - 1;
        &self.generations[g.min(last)]
    }

    /// The `n`th request of the run, sent `t` seconds after the start.
    pub fn pick(&self, n: u64, t: f64) -> (Kind, Request) {
        let h = splitmix(n);
        // Every slot once in any 100 consecutive requests (37 is prime to 100): even a slow
        // run sends its 2% of withdrawn-key tokens.
        let slot = n.wrapping_mul(37) % 100;
        let pick_from = |pool: &[Request]| pool[((h >> 8) % pool.len() as u64) as usize].clone();
        let s = &self.schedule;
        let current = self.gen_of(s.current(t));
        let mut bound = REPEATED_SHARE;
        if slot < bound {
            return (Kind::Repeated, pick_from(&current.repeated));
        }
        bound += DISTINCT_SHARE;
        if slot < bound {
            return (Kind::Distinct, pick_from(&current.distinct));
        }
        bound += PREVIOUS_KEY_SHARE;
        if slot < bound {
            return match s.previous_valid(t) {
                Some(g) => (Kind::PreviousKey, pick_from(&self.gen_of(g).repeated)),
                None => (Kind::Repeated, pick_from(&current.repeated)),
            };
        }
        bound += WITHDRAWN_KEY_SHARE;
        if slot < bound {
            return match s.withdrawn(t) {
                Some(g) => {
                    let mut r = pick_from(&self.gen_of(g).repeated);
                    r.expect = 401;
                    (Kind::WithdrawnKey, r)
                }
                None => (Kind::Repeated, pick_from(&current.repeated)),
            };
        }
        (Kind::NoToken, self.no_token.clone())
    }

    /// The public keys of generation `g` (both algorithms).
    pub fn jwks_of(&self, gens: &[usize]) -> Vec<&TestKey> {
        gens.iter()
            .filter_map(|&g| self.generations.get(g))
            .flat_map(|g| [&g.rsa, &g.ec])
            .collect()
    }
}

/// A well-mixed hash of the request number: the mix is the same on every run.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_published_before_use_and_refused_only_after_withdrawal() {
        let s = Schedule::new(60.0).unwrap();
        let mut t = 0.0;
        while t < 300.0 {
            assert!(s.published(t).contains(&s.current(t)), "t={t}");
            if let Some(g) = s.previous_valid(t) {
                assert!(s.published(t).contains(&g), "t={t}");
            }
            if let Some(g) = s.withdrawn(t) {
                // Withdrawn at least `margin` ago, and not published again.
                assert!(!s.published(t - s.margin_s).contains(&g), "t={t}");
                assert!(!s.published(t).contains(&g), "t={t}");
                assert!(g < s.current(t), "t={t}");
            }
            t += 0.25;
        }
        assert!(Schedule::new(11.0).is_err());
        assert!(Schedule::new(12.0).is_ok());
    }
}
