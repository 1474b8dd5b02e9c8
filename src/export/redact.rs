//! Credentials out of datasets: `export-sft` looks for secrets in every
//! message, tool-call argument and tool result of a row and replaces each
//! with a typed placeholder, `<REDACTED:aws_access_key>`. Within a row one
//! value always gets one placeholder, and distinct values of one kind get
//! distinct ones (`<REDACTED:aws_access_key#2>` for the second). Once a value
//! is found anywhere in a row, every other occurrence of it in that row is
//! replaced too (a password seen in `password=…` and again alone). With
//! [`Level::Pii`], e-mail addresses and phone numbers are replaced as well.
//!
//! # The rules
//!
//! The token formats (each provider's prefix, alphabet and length), the
//! private key block, the JWT and the `name = value` assignment with its
//! entropy threshold (3.5 bits a character) and its allow-lists are facts of
//! the gitleaks rule set (`config/gitleaks.toml` of
//! github.com/gitleaks/gitleaks, MIT licence, Copyright (c) 2019 Zachary
//! Rice); each rule below names the gitleaks ids it follows. The patterns
//! are written here for Rust's `regex` (no code or text is copied), and a
//! few are widened on purpose: a rule that gitleaks bounds by length accepts
//! longer tokens of the same prefix, Anthropic keys of any `sk-ant-<kind><nn>`
//! family, and a Telegram bot token needs no `telegram` near it.
//! Passwords in URLs (`scheme://user:password@host`), `Bearer` and `Basic`
//! credentials, e-mail addresses and phone numbers are this module's own.
//!
//! Why not a library: the Rust crates that embed a rule set were measured
//! or read and none fits. `leakguard` (MIT/Apache, no dependencies) knows
//! about 20 kinds (a third of them PII) and scans the text once per
//! detector: its 12 credential detectors read 37 MB/s over
//! plain prose here; `keyspoor` (Apache-2.0, gitleaks data) needs Rust 1.96
//! and brings archive and Git scanning along; `keyhog-scanner` pins exact
//! versions of tokio and regex other than ours and brings GPU and Hyperscan
//! back-ends; `secretscout`'s library scans a repository into a report
//! file, not a string; `rtb-redact` redacts
//! every 40-character hex string (git hashes) and untyped; `keyhunter` is
//! GPL-3.0.
//!
//! # Speed
//!
//! A text is looked at in up to three steps, each only if the one before
//! found something:
//!
//! 1. One pass over its bytes for a run of at least ten bytes that could
//!    belong to a credential (ASCII letters, digits and `_-+/=.:@~%!#$*^?&|\`)
//!    and is not a plain word (a letter and then lowercase letters). Every
//!    secret rule needs such a run, so prose without one is done here; with
//!    [`Level::Pii`] this step is skipped (an e-mail address can be short).
//! 2. One Aho-Corasick pass for the rules' keywords (ASCII case folded). A
//!    keyword opens its rule only where every match of the rule could start:
//!    a provider's prefix as written, `key`/`token`/`password`… followed by
//!    `=` or `:`, `://` followed by `user:password@`, `Bearer` by a blank.
//! 3. The regular expression of each rule opened, over the text, and the
//!    checks of its candidates (boundaries, entropy, placeholders).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use crate::conversation::Conversation;

/// What `export-sft` redacts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Credentials: provider API keys and tokens, private keys, JWTs, bearer
    /// tokens, passwords in URLs, secret-looking `name = value` assignments.
    Secrets,
    /// Credentials, e-mail addresses and phone numbers.
    Pii,
}

impl Level {
    /// The level as `--redact` names it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Secrets => "secrets",
            Level::Pii => "pii",
        }
    }
}

/// Values replaced, by kind (`aws_access_key` → 3): every occurrence counts.
pub type Counts = BTreeMap<&'static str, u64>;

/// How a rule's candidates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A token with a provider's own shape: it stands alone (no letter,
    /// digit or `_` right before or after it; a JSON `\n` before is fine).
    Token,
    /// A PEM private key block: its delimiters are its boundaries.
    Block,
    /// The password of `scheme://user:password@host`: not a placeholder.
    UrlPassword,
    /// `Bearer <token>`: a random-looking token.
    Bearer,
    /// `Basic <base64>`: it decodes to `user:password`.
    Basic,
    /// `name = value` with a secret-looking name: a random-looking value.
    Assignment,
    /// An e-mail address.
    Email,
    /// A phone number: 7 to 15 digits, not a date.
    Phone,
}

impl Check {
    /// Of two overlapping candidates, the one of the lower priority wins
    /// (then the longer): a provider's token is more precise than `Bearer`,
    /// which is more precise than an assignment.
    fn priority(self) -> u8 {
        match self {
            Check::Token | Check::Block => 0,
            Check::UrlPassword | Check::Bearer | Check::Basic => 1,
            Check::Assignment => 2,
            Check::Email | Check::Phone => 3,
        }
    }
}

/// One rule: the placeholder's kind, the keywords one of which must occur
/// in a text for the pattern to run (none: it always runs), and the pattern,
/// whose first group, if it has one, is the secret. A keyword counts only
/// where the rule's gate opens (see [`Redactor::opens`]): a provider token's
/// keyword as written (it is a literal of the pattern), a case-insensitive
/// rule's keyword where what follows it could start a match.
struct Spec {
    kind: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    check: Check,
}

/// The kind of an assignment's value, from its name.
const GENERIC: &str = "generic_secret";

/// The credential rules; the gitleaks ids each follows are in its comment.
const SECRETS: &[Spec] = &[
    // aws-access-token
    Spec {
        kind: "aws_access_key",
        keywords: &["A3T", "AKIA", "ASIA", "ABIA", "ACCA"],
        pattern: r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        check: Check::Token,
    },
    // openai-api-key (also without the T3BlbkFJ marker after sk-proj-, …)
    Spec {
        kind: "openai_api_key",
        keywords: &["T3BlbkFJ", "sk-proj-", "sk-svcacct-", "sk-admin-"],
        pattern: r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}",
        check: Check::Token,
    },
    // anthropic-api-key, anthropic-admin-api-key
    Spec {
        kind: "anthropic_api_key",
        keywords: &["sk-ant-"],
        pattern: r"sk-ant-[a-z]{3,7}[0-9]{2}-[A-Za-z0-9_-]{80,}",
        check: Check::Token,
    },
    // gcp-api-key
    Spec {
        kind: "google_api_key",
        keywords: &["AIza"],
        pattern: r"AIza[A-Za-z0-9_-]{35}",
        check: Check::Token,
    },
    // github-pat, github-oauth, github-app-token, github-refresh-token,
    // github-fine-grained-pat
    Spec {
        kind: "github_token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        pattern: r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}",
        check: Check::Token,
    },
    // gitlab-pat, gitlab-pat-routable, gitlab-ptt, gitlab-deploy-token,
    // gitlab-runner-authentication-token, gitlab-rrt
    Spec {
        kind: "gitlab_token",
        keywords: &["glpat-", "glptt-", "gldt-", "glrt-", "GR1348941"],
        pattern: r"glpat-[A-Za-z0-9_-]{20,}(?:\.[0-9a-z]{9})?|glptt-[0-9a-f]{40}|gl(?:dt|rt)-[A-Za-z0-9_-]{20,}|GR1348941[A-Za-z0-9_-]{20,}",
        check: Check::Token,
    },
    // slack-bot-token, slack-user-token, slack-app-token, slack-legacy-*,
    // slack-config-access-token, slack-config-refresh-token
    Spec {
        kind: "slack_token",
        keywords: &["xox", "xapp-"],
        pattern: r"xox[abeoprs]-[A-Za-z0-9-]{10,}|xoxe\.xox[bp]-[A-Za-z0-9-]{100,}|xapp-[0-9]-[A-Za-z0-9-]{10,}",
        check: Check::Token,
    },
    // slack-webhook-url
    Spec {
        kind: "slack_webhook",
        keywords: &["hooks.slack.com"],
        pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,}",
        check: Check::Token,
    },
    // stripe-access-token
    Spec {
        kind: "stripe_key",
        keywords: &[
            "sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_",
        ],
        pattern: r"[sr]k_(?:live|test|prod)_[A-Za-z0-9]{10,}",
        check: Check::Token,
    },
    // sendgrid-api-token
    Spec {
        kind: "sendgrid_api_key",
        keywords: &["SG."],
        pattern: r"SG\.[A-Za-z0-9=_.-]{66}",
        check: Check::Token,
    },
    // twilio-api-key
    Spec {
        kind: "twilio_api_key",
        keywords: &["SK"],
        pattern: r"SK[0-9a-fA-F]{32}",
        check: Check::Token,
    },
    // huggingface-access-token, huggingface-organization-api-token
    Spec {
        kind: "huggingface_token",
        keywords: &["hf_", "api_org_"],
        pattern: r"(?:hf|api_org)_[A-Za-z]{34}",
        check: Check::Token,
    },
    // npm-access-token
    Spec {
        kind: "npm_token",
        keywords: &["npm_"],
        pattern: r"npm_[A-Za-z0-9]{36}",
        check: Check::Token,
    },
    // pypi-upload-token
    Spec {
        kind: "pypi_token",
        keywords: &["pypi-AgEIcHlwaS5vcmc"],
        pattern: r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
        check: Check::Token,
    },
    // digitalocean-pat, digitalocean-access-token, digitalocean-refresh-token
    Spec {
        kind: "digitalocean_token",
        keywords: &["doo_v1_", "dop_v1_", "dor_v1_"],
        pattern: r"do[opr]_v1_[a-f0-9]{64}",
        check: Check::Token,
    },
    // shopify-access-token, shopify-custom-access-token,
    // shopify-private-app-access-token, shopify-shared-secret
    Spec {
        kind: "shopify_token",
        keywords: &["shpat_", "shpca_", "shppa_", "shpss_"],
        pattern: r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        check: Check::Token,
    },
    // linear-api-key
    Spec {
        kind: "linear_api_key",
        keywords: &["lin_api_"],
        pattern: r"lin_api_[A-Za-z0-9]{40}",
        check: Check::Token,
    },
    // doppler-api-token
    Spec {
        kind: "doppler_token",
        keywords: &["dp.pt."],
        pattern: r"dp\.pt\.[A-Za-z0-9]{43}",
        check: Check::Token,
    },
    // databricks-api-token
    Spec {
        kind: "databricks_token",
        keywords: &["dapi"],
        pattern: r"dapi[a-f0-9]{32}(?:-[0-9])?",
        check: Check::Token,
    },
    // age-secret-key
    Spec {
        kind: "age_secret_key",
        keywords: &["AGE-SECRET-KEY-1"],
        pattern: r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        check: Check::Token,
    },
    // postman-api-token
    Spec {
        kind: "postman_api_key",
        keywords: &["PMAK-"],
        pattern: r"PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}",
        check: Check::Token,
    },
    // pulumi-api-token
    Spec {
        kind: "pulumi_token",
        keywords: &["pul-"],
        pattern: r"pul-[a-f0-9]{40}",
        check: Check::Token,
    },
    // grafana-cloud-api-token, grafana-service-account-token, grafana-api-key
    Spec {
        kind: "grafana_token",
        keywords: &["glc_", "glsa_", "eyJrIjoi"],
        pattern: r"glc_[A-Za-z0-9+/]{32,}={0,3}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|eyJrIjoi[A-Za-z0-9]{70,}={0,3}",
        check: Check::Token,
    },
    // sentry-user-token, sentry-org-token
    Spec {
        kind: "sentry_token",
        keywords: &["sntryu_", "sntrys_"],
        pattern: r"sntryu_[a-f0-9]{64}|sntrys_eyJpYXQiO[A-Za-z0-9+/=_]{40,}",
        check: Check::Token,
    },
    // vault-service-token, vault-batch-token
    Spec {
        kind: "vault_token",
        keywords: &["hvs.", "hvb."],
        pattern: r"hvs\.[A-Za-z0-9_-]{90,}|hvb\.[A-Za-z0-9_-]{138,}",
        check: Check::Token,
    },
    // planetscale-api-token, planetscale-password, planetscale-oauth-token
    Spec {
        kind: "planetscale_token",
        keywords: &["pscale_"],
        pattern: r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_=.-]{32,64}",
        check: Check::Token,
    },
    // perplexity-api-key
    Spec {
        kind: "perplexity_api_key",
        keywords: &["pplx-"],
        pattern: r"pplx-[A-Za-z0-9]{48}",
        check: Check::Token,
    },
    // notion-api-token
    Spec {
        kind: "notion_token",
        keywords: &["ntn_"],
        pattern: r"ntn_[0-9]{11}[A-Za-z0-9]{35}",
        check: Check::Token,
    },
    // rubygems-api-token
    Spec {
        kind: "rubygems_token",
        keywords: &["rubygems_"],
        pattern: r"rubygems_[a-f0-9]{48}",
        check: Check::Token,
    },
    // hashicorp-tf-api-token
    Spec {
        kind: "terraform_token",
        keywords: &["atlasv1"],
        pattern: r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}",
        check: Check::Token,
    },
    // heroku-api-key-v2
    Spec {
        kind: "heroku_api_key",
        keywords: &["HRKU-AA"],
        pattern: r"HRKU-AA[A-Za-z0-9_-]{58}",
        check: Check::Token,
    },
    // sendinblue-api-token
    Spec {
        kind: "sendinblue_api_key",
        keywords: &["xkeysib-"],
        pattern: r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
        check: Check::Token,
    },
    // dynatrace-api-token
    Spec {
        kind: "dynatrace_token",
        keywords: &["dt0c01."],
        pattern: r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}",
        check: Check::Token,
    },
    // 1password-service-account-token
    Spec {
        kind: "onepassword_token",
        keywords: &["ops_eyJ"],
        pattern: r"ops_eyJ[A-Za-z0-9+/]{250,}={0,3}",
        check: Check::Token,
    },
    // telegram-bot-api-token (also in a bot API URL, `…/bot<token>/…`)
    Spec {
        kind: "telegram_bot_token",
        keywords: &[":A"],
        pattern: r"(?:bot)?([0-9]{5,16}:A[A-Za-z0-9_-]{34})",
        check: Check::Token,
    },
    // jwt
    Spec {
        kind: "jwt",
        keywords: &["eyJ"],
        pattern: r"ey[A-Za-z0-9_-]{17,}\.ey[A-Za-z0-9_/+-]{17,}\.(?:[A-Za-z0-9_/+-]{10,}={0,2})?",
        check: Check::Token,
    },
    // private-key; a block cut short (no END line) is taken up to where
    // its base64 ends.
    Spec {
        kind: "private_key",
        keywords: &["-----BEGIN"],
        pattern: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]{64,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,-]{64,})",
        check: Check::Block,
    },
    // The password of a URL's user information (RFC 3986: in a URL it is
    // ASCII; `/` may stand escaped as `\/` in JSON text).
    Spec {
        kind: "url_password",
        keywords: &["://", r":\/\/"],
        pattern: r"[A-Za-z][A-Za-z0-9+.-]{1,30}:\\?/\\?/[A-Za-z0-9!$%&*+.=^_|~-]+:([A-Za-z0-9!#$%&*+.:=^_|~-]+)@[A-Za-z0-9\[]",
        check: Check::UrlPassword,
    },
    // The curl-auth-header rule's `Authorization: Bearer <token>`, anywhere.
    Spec {
        kind: "bearer_token",
        keywords: &["bearer"],
        pattern: r"(?i:bearer)[ \t]+([A-Za-z0-9_.+/~-]{16,}=*)",
        check: Check::Bearer,
    },
    // The curl-auth-header rule's `Authorization: Basic <base64>`, anywhere.
    Spec {
        kind: "basic_auth",
        keywords: &["basic"],
        pattern: r"(?i:basic)[ \t]+([A-Za-z0-9+/]{12,}={0,2})",
        check: Check::Basic,
    },
    // generic-api-key: a value assigned to a name that ends in a secret
    // word; `password`, `aws_secret_key` or `generic_secret` by the name.
    Spec {
        kind: GENERIC,
        keywords: &[
            "password",
            "passwd",
            "pwd",
            "secret",
            "token",
            "auth",
            "credential",
            "credentials",
            "creds",
            "key",
        ],
        pattern: r#"(?i:passw(?:or)?d|pwd|secret|token|auth|credentials?|creds|key)\\?["'`]?[ \t]{0,3}(?:=|:=|:|=>)[ \t]{0,3}\\?["'`]?([A-Za-z0-9_.+/=~!#$%*@^-]{12,})"#,
        check: Check::Assignment,
    },
];

/// The personal data rules of `--redact pii`.
const PII: &[Spec] = &[
    Spec {
        kind: "email",
        keywords: &["@"],
        pattern: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
        check: Check::Email,
    },
    // International (+ and the country code), North American
    // (`(415) 555-0100`, `415-555-0100`) and national forms with a trunk 0
    // (`030 1234567`, `06 12 34 56 78`, `020 7946 0958`); separators are
    // required outside the international form, so long plain numbers are
    // not phone numbers.
    Spec {
        kind: "phone",
        keywords: &[],
        pattern: r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?)(?:[ .-]?[0-9]{2,4}){1,5}|(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}|0[1-9][0-9]{0,4}(?:[ -][0-9]{2,8}){1,4}",
        check: Check::Phone,
    },
];

/// Names whose values are not credentials though the name ends in `key` or
/// `token`: gitleaks' generic-api-key allow-list, and a few more ids.
const NAME_ALLOWED: &str = r"(?i)(?:(?:bucket|foreign|hot|idx|natural|primary|pub|public|schema|sequence|sort|partition|cache|idempotency|dedupe?)[_.-]?key|csrf[_.-]?token|public[_.-]?token|monkey|donkey|turkey)$";

/// The secret words an assignment's name ends in (as in [`SECRETS`]).
const SECRET_NAME: &str = r"(?i)(?:passw(?:or)?d|pwd|secret|token|auth|credentials?|creds|key)$";

/// The shortest run of credential bytes every secret rule's match holds.
const MIN_RUN: usize = 10;

/// An assignment's or bearer token's value needs at least this many bits of
/// Shannon entropy a character (gitleaks' generic-api-key threshold).
const MIN_ENTROPY: f64 = 3.5;

#[derive(Debug)]
struct Rule {
    kind: &'static str,
    regex: Regex,
    check: Check,
}

/// Finds and replaces credentials; built once per export.
#[derive(Debug)]
pub struct Redactor {
    level: Level,
    rules: Vec<Rule>,
    /// The keywords of every rule, ASCII case folded.
    keywords: AhoCorasick,
    /// For each keyword, as written, the rule it lets run.
    keyword_rule: Vec<(&'static str, usize)>,
    /// The rules without keywords, which always run.
    always: u64,
    name_allowed: Regex,
    secret_name: Regex,
}

/// A found credential: its byte range in the text, kind and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    kind: &'static str,
    priority: u8,
}

/// One text of a row to redact.
struct Field<'a> {
    text: &'a mut String,
    /// Tool-call arguments as JSON text: they must stay JSON.
    json: bool,
    /// The kind of a secret-named JSON member's value (`{"api_key": …}`).
    named: Option<&'static str>,
}

/// The placeholders of one row.
#[derive(Default)]
struct Row {
    /// Value → (kind, its number among the kind's distinct values).
    values: HashMap<String, (&'static str, u32)>,
    /// Distinct values so far, by kind.
    per_kind: HashMap<&'static str, u32>,
}

impl Row {
    /// Registers `value` (found as `kind`), keeping the kind and number of
    /// its first finding.
    fn register(&mut self, kind: &'static str, value: &str) {
        if !self.values.contains_key(value) {
            let n = self.per_kind.entry(kind).or_insert(0);
            *n += 1;
            self.values.insert(value.to_string(), (kind, *n));
        }
    }

    /// The placeholder of a registered value, and its kind.
    fn placeholder(&self, value: &str) -> Option<(&'static str, String)> {
        self.values.get(value).map(|&(kind, n)| {
            let text = if n == 1 {
                format!("<REDACTED:{kind}>")
            } else {
                format!("<REDACTED:{kind}#{n}>")
            };
            (kind, text)
        })
    }
}

impl Redactor {
    /// The redactor of `level`'s rules.
    pub fn new(level: Level) -> Redactor {
        let specs: Vec<&Spec> = match level {
            Level::Secrets => SECRETS.iter().collect(),
            Level::Pii => SECRETS.iter().chain(PII).collect(),
        };
        assert!(specs.len() <= 64, "one bit a rule");
        let mut keyword_rule: Vec<(&'static str, usize)> = Vec::new();
        let mut always = 0u64;
        let mut rules = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if spec.keywords.is_empty() {
                always |= 1 << i;
            }
            for &w in spec.keywords {
                keyword_rule.push((w, i));
            }
            rules.push(Rule {
                kind: spec.kind,
                regex: built_in(spec.pattern),
                check: spec.check,
            });
        }
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(keyword_rule.iter().map(|&(w, _)| w))
            .expect("the built-in keywords build an automaton");
        Redactor {
            level,
            rules,
            keywords,
            keyword_rule,
            always,
            name_allowed: built_in(NAME_ALLOWED),
            secret_name: built_in(SECRET_NAME),
        }
    }

    /// The level it was built for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Redacts a row: message contents (tool results among them) and
    /// tool-call arguments, a JSON text (which stays JSON) or a JSON value
    /// whose strings are redacted. Adds what it replaced to `counts`.
    pub fn redact(&self, conversation: &mut Conversation, counts: &mut Counts) {
        let mut fields = Vec::new();
        for message in &mut conversation.messages {
            let crate::conversation::Message {
                content,
                tool_calls,
                ..
            } = message;
            if let Some(text) = content {
                fields.push(Field {
                    text,
                    json: false,
                    named: None,
                });
            }
            for call in tool_calls {
                match &mut call.arguments {
                    Value::String(text) => fields.push(Field {
                        text,
                        json: true,
                        named: None,
                    }),
                    value => self.strings(value, None, &mut fields),
                }
            }
        }
        self.redact_fields(&mut fields, &mut Row::default(), counts);
    }

    /// One text redacted on its own (a row of one text).
    pub fn redact_text(&self, text: &str, counts: &mut Counts) -> String {
        let mut text = text.to_string();
        let mut fields = [Field {
            text: &mut text,
            json: false,
            named: None,
        }];
        self.redact_fields(&mut fields, &mut Row::default(), counts);
        text
    }

    /// The strings of a JSON value as fields; `named` is the kind of a
    /// secret-named member's value.
    fn strings<'a>(
        &self,
        value: &'a mut Value,
        named: Option<&'static str>,
        out: &mut Vec<Field<'a>>,
    ) {
        match value {
            Value::String(text) => out.push(Field {
                text,
                json: false,
                named,
            }),
            Value::Array(items) => {
                for item in items {
                    self.strings(item, None, out);
                }
            }
            Value::Object(members) => {
                for (name, item) in members {
                    let named = self.name_kind(name);
                    self.strings(item, named, out);
                }
            }
            _ => {}
        }
    }

    /// The kind of the value of a member or variable called `name`, when
    /// the name says it holds a secret.
    fn name_kind(&self, name: &str) -> Option<&'static str> {
        if !self.secret_name.is_match(name) || self.name_allowed.is_match(name) {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        Some(if lower.contains("aws") {
            "aws_secret_key"
        } else if lower.contains("passw") || lower.contains("pwd") {
            "password"
        } else {
            GENERIC
        })
    }

    /// Finds the credentials of every field, registers their values in the
    /// row, then replaces them and every other occurrence of a registered
    /// value.
    fn redact_fields(&self, fields: &mut [Field], row: &mut Row, counts: &mut Counts) {
        let mut found: Vec<Vec<Found>> = Vec::with_capacity(fields.len());
        for field in fields.iter() {
            let mut f = Vec::new();
            self.find(field.text, field.named, &mut f);
            resolve(&mut f);
            for x in &f {
                row.register(x.kind, &field.text[x.start..x.end]);
            }
            found.push(f);
        }
        if row.values.is_empty() {
            return;
        }
        // Every occurrence of a found value, wherever it stands.
        let values: Vec<&str> = row.values.keys().map(String::as_str).collect();
        let again = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .ok();
        for (field, mut f) in fields.iter_mut().zip(found) {
            if let Some(again) = &again {
                for m in again.find_iter(field.text.as_str()) {
                    if let Some((kind, _)) = row.placeholder(&field.text[m.start()..m.end()]) {
                        f.push(Found {
                            start: m.start(),
                            end: m.end(),
                            kind,
                            priority: u8::MAX,
                        });
                    }
                }
                resolve(&mut f);
            }
            if f.is_empty() {
                continue;
            }
            let mut kinds = Vec::with_capacity(f.len());
            let redacted = rewrite(field.text, &f, row, &mut kinds);
            if field.json && is_json(field.text) && !is_json(&redacted) {
                // Never expected (no rule's secret holds a quote or a
                // backslash of an escape), but the arguments must stay JSON:
                // redact the strings of their value instead.
                if let Ok(mut value) = serde_json::from_str::<Value>(field.text) {
                    let mut inner = Vec::new();
                    self.strings(&mut value, None, &mut inner);
                    self.redact_fields(&mut inner, row, counts);
                    *field.text = value.to_string();
                    continue;
                }
            }
            for kind in kinds {
                *counts.entry(kind).or_default() += 1;
            }
            *field.text = redacted;
        }
    }

    /// Whether a keyword of rule `i` found at `start..end` of `text` lets the
    /// rule run: a condition every match of the rule meets there, so that
    /// a keyword common in code (`key`, `token`, `://`) costs no pattern run
    /// where no match can be.
    fn opens(&self, i: usize, keyword: &str, text: &[u8], start: usize, end: usize) -> bool {
        let after = &text[end..];
        match self.rules[i].check {
            // The keyword is a literal of the pattern, case and all.
            Check::Token | Check::Block => &text[start..end] == keyword.as_bytes(),
            // `\?["'`]?[ \t]{0,3}` then `=` or `:`.
            Check::Assignment => {
                let mut at = usize::from(after.first() == Some(&b'\\'));
                at += usize::from(matches!(after.get(at), Some(b'"' | b'\'' | b'`')));
                let blanks = after[at.min(after.len())..]
                    .iter()
                    .take(3)
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                matches!(after.get(at + blanks), Some(b'=' | b':'))
            }
            // `user:password@`: user information bytes, then `@`.
            Check::UrlPassword => {
                let n = after.iter().take_while(|&&b| userinfo_byte(b)).count();
                n >= 3 && after.get(n) == Some(&b'@')
            }
            Check::Bearer | Check::Basic => matches!(after.first(), Some(b' ' | b'\t')),
            Check::Email | Check::Phone => true,
        }
    }

    /// The credentials in `text`, possibly overlapping; `named` is the kind
    /// of the whole text when it is a secret-named member's value.
    fn find(&self, text: &str, named: Option<&'static str>, out: &mut Vec<Found>) {
        if let Some(kind) = named {
            if assigned_secret(text) {
                out.push(Found {
                    start: 0,
                    end: text.len(),
                    kind,
                    priority: Check::Assignment.priority(),
                });
                return;
            }
        }
        let bytes = text.as_bytes();
        if self.level == Level::Secrets && !maybe_secret(bytes) {
            return;
        }
        let mut on = self.always;
        for m in self.keywords.find_overlapping_iter(text) {
            let (keyword, i) = self.keyword_rule[m.pattern().as_usize()];
            if on & (1 << i) == 0 && self.opens(i, keyword, bytes, m.start(), m.end()) {
                on |= 1 << i;
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if on & (1 << i) == 0 {
                continue;
            }
            for caps in rule.regex.captures_iter(text) {
                let (Some(whole), Some(m)) = (caps.get(0), caps.get(1).or(caps.get(0))) else {
                    continue;
                };
                let (start, end) = (m.start(), m.end());
                let secret = m.as_str();
                let mut kind = rule.kind;
                let ok = match rule.check {
                    Check::Token => left_bound(bytes, whole.start()) && right_bound(bytes, end),
                    Check::Block => true,
                    Check::UrlPassword => !placeholder(secret),
                    Check::Bearer => left_bound(bytes, whole.start()) && random_looking(secret),
                    Check::Basic => left_bound(bytes, whole.start()) && basic_credentials(secret),
                    Check::Assignment => match self.name_kind(name_at(text, whole.start())) {
                        Some(k) => {
                            kind = k;
                            assigned_secret(secret)
                        }
                        None => false,
                    },
                    Check::Email => left_bound_email(bytes, start) && right_bound(bytes, end),
                    Check::Phone => phone_number(bytes, start, end),
                };
                if ok {
                    out.push(Found {
                        start,
                        end,
                        kind,
                        priority: rule.check.priority(),
                    });
                }
            }
        }
    }
}

/// A built-in pattern, compiled (the unit tests compile every one).
fn built_in(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?}: {e}"))
}

/// `text` with the found ranges (sorted, disjoint) replaced by their
/// values' placeholders; the kinds replaced go to `kinds`.
fn rewrite(text: &str, found: &[Found], row: &Row, kinds: &mut Vec<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        let Some((kind, placeholder)) = row.placeholder(&text[f.start..f.end]) else {
            continue;
        };
        out.push_str(&text[at..f.start]);
        out.push_str(&placeholder);
        kinds.push(kind);
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Keeps the candidates that win their overlaps (lower priority first, then
/// the longer, then the earlier), sorted by position.
fn resolve(found: &mut Vec<Found>) {
    if found.len() > 1 {
        found.sort_by_key(|f| (f.priority, Reverse(f.end - f.start), f.start));
        let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
        found.retain(|f| {
            if let Some((_, &end)) = taken.range(..f.end).next_back() {
                if end > f.start {
                    return false;
                }
            }
            taken.insert(f.start, f.end);
            true
        });
    }
    found.sort_by_key(|f| f.start);
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A byte of a URL's `user:password` as the url_password rule reads it.
fn userinfo_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&*+.:=^_|~-".contains(&b)
}

/// Nothing of a word right before `start` (a JSON escape such as `\n` is
/// not part of a word).
fn left_bound(bytes: &[u8], start: usize) -> bool {
    start == 0
        || !word_byte(bytes[start - 1])
        || (start >= 2
            && bytes[start - 2] == b'\\'
            && matches!(bytes[start - 1], b'n' | b'r' | b't'))
}

/// Nothing of a word right after `end`.
fn right_bound(bytes: &[u8], end: usize) -> bool {
    end >= bytes.len() || !word_byte(bytes[end])
}

/// An e-mail address does not start inside a longer local part, nor as
/// the user of a URL (`ssh://git@host`).
fn left_bound_email(bytes: &[u8], start: usize) -> bool {
    start == 0 || !(word_byte(bytes[start - 1]) || b"._%+-/".contains(&bytes[start - 1]))
}

/// The name of an assignment whose secret word starts at `word`: the
/// identifier bytes before it and the word's own.
fn name_at(text: &str, word: usize) -> &str {
    let bytes = text.as_bytes();
    let mut start = word;
    while start > 0 && (word_byte(bytes[start - 1]) || matches!(bytes[start - 1], b'-' | b'.')) {
        start -= 1;
    }
    let mut end = word;
    while end < bytes.len() && word_byte(bytes[end]) {
        end += 1;
    }
    &text[start..end]
}

/// Shannon entropy of `s`'s bytes, in bits a byte.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for &b in s.as_bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Words that mark a value as an example or a placeholder.
const STOP_WORDS: &[&str] = &[
    "example",
    "placeholder",
    "changeme",
    "xxxxx",
    "your_",
    "your-",
    "redacted",
];

/// A value that looks random: letters and digits, enough entropy, no
/// placeholder word.
fn random_looking(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().any(|b| b.is_ascii_alphabetic())
        && entropy(value) >= MIN_ENTROPY
        && !STOP_WORDS.iter().any(|w| lower.contains(w))
}

/// An assigned value that is a credential: random-looking, and not a path
/// or a version number.
fn assigned_secret(value: &str) -> bool {
    let b = value.as_bytes();
    value.len() >= 12
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.+/=~!#$%*@^-".contains(&c))
        && !matches!(b.first(), Some(b'/' | b'.' | b'~'))
        && !(b.first().is_some_and(u8::is_ascii_digit) && b.get(1) == Some(&b'.'))
        && !(b.first() == Some(&b'v')
            && b.get(1).is_some_and(u8::is_ascii_digit)
            && b.get(2) == Some(&b'.'))
        && random_looking(value)
}

/// A URL password that is a placeholder, not a password: gitleaks' global
/// allow-list (`$VAR`, `%VAR%`, one repeated character) and the words for
/// "password".
fn placeholder(password: &str) -> bool {
    let lower = password.to_ascii_lowercase();
    let b = password.as_bytes();
    let repeated = b.iter().all(|&c| c == b[0]);
    let variable = (b[0] == b'$' || b[0] == b'%')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'%');
    repeated
        || variable
        || ["password", "passwd", "pass", "pwd", "secret", "changeme"].contains(&lower.as_str())
}

/// `Basic` credentials: base64 of `user:password`.
fn basic_credentials(encoded: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .is_some_and(|s| s.contains(':') && s.len() >= 3 && s.chars().all(|c| !c.is_control()))
}

/// A phone number between `start` and `end`: 7 to 15 digits, not inside a
/// longer number, not a date.
fn phone_number(bytes: &[u8], start: usize, end: usize) -> bool {
    let s = &bytes[start..end];
    let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
    let before = start.checked_sub(1).map(|i| bytes[i]);
    let after = bytes.get(end).copied();
    let glued = |b: Option<u8>| {
        b.is_some_and(|b| word_byte(b) || matches!(b, b'.' | b'-' | b'/' | b'+' | b':'))
    };
    let date = {
        let groups: Vec<&[u8]> = s
            .split(|b| !b.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .collect();
        groups.len() == 3
            && groups[0].len() <= 4
            && groups[1].len() <= 2
            && groups[2].len() <= 4
            && (groups[0].len() == 4 || groups[2].len() == 4)
    };
    (7..=15).contains(&digits) && !glued(before) && !glued(after) && !date
}

/// The bytes that end a run of credential bytes: whitespace and control
/// bytes, quotes, brackets, `,;`, and every byte of a non-ASCII character.
/// ASCII letters, digits and `_-+/=.:@~%!#$*^?&|\` continue one.
const SEPARATOR: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = !(c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'_' | b'-'
                    | b'+'
                    | b'/'
                    | b'='
                    | b'.'
                    | b':'
                    | b'@'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'#'
                    | b'$'
                    | b'*'
                    | b'^'
                    | b'?'
                    | b'&'
                    | b'|'
                    | b'\\'
            ));
        b += 1;
    }
    t
};

/// A plain word: a letter, lowercase letters, and at most one `.:!?` at
/// its end.
fn plain_word(run: &[u8]) -> bool {
    let body = match run.split_last() {
        Some((b'.' | b':' | b'!' | b'?', body)) => body,
        _ => run,
    };
    body.split_first().is_some_and(|(first, rest)| {
        first.is_ascii_alphabetic() && rest.iter().all(u8::is_ascii_lowercase)
    })
}

/// Whether `bytes` holds a run of at least [`MIN_RUN`] credential bytes
/// that is not a plain word: every secret rule's match holds one.
///
/// Branch-free over prose: 64 bytes at a time become a mask of credential
/// bytes, in which shifted ANDs find any run of [`MIN_RUN`]; only such a run
/// is looked at byte by byte.
fn maybe_secret(bytes: &[u8]) -> bool {
    const _: () = assert!(MIN_RUN == 10, "the mask steps below find runs of 10");
    let n = bytes.len();
    let separator = |b: &u8| SEPARATOR[*b as usize];
    // The next byte to look at, and how many credential bytes end right
    // before it.
    let (mut at, mut carry) = (0usize, 0usize);
    while at < n {
        let chunk = &bytes[at..n.min(at + 64)];
        let mut mask = 0u64;
        for (i, &b) in chunk.iter().enumerate() {
            mask |= u64::from(!SEPARATOR[b as usize]) << i;
        }
        // Bit i of `runs`: bytes i-9..=i of the chunk are credential bytes.
        let two = mask & (mask << 1);
        let four = two & (two << 2);
        let runs = four & (four << 4) & (two << 8);
        let lead = mask.trailing_ones() as usize;
        let run_start = if carry > 0 && carry + lead >= MIN_RUN {
            Some(at - carry)
        } else if runs != 0 {
            let last = at + runs.trailing_zeros() as usize;
            Some(
                bytes[..last]
                    .iter()
                    .rposition(separator)
                    .map_or(0, |i| i + 1),
            )
        } else {
            None
        };
        match run_start {
            Some(start) => {
                let end = bytes[start..]
                    .iter()
                    .position(separator)
                    .map_or(n, |i| start + i);
                if !plain_word(&bytes[start..end]) {
                    return true;
                }
                (at, carry) = (end, 0);
            }
            None if chunk.len() < 64 => break,
            None => {
                // Not all 64 are credential bytes (that would be a run).
                carry = mask.leading_ones() as usize;
                at += 64;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Message, Role, ToolCall};

    const PLANTED: &str = include_str!("../../tests/data/redact/planted.tsv");
    const LOOKALIKES: &str = include_str!("../../tests/data/redact/lookalikes.txt");

    /// (kind, text without markers, the secret) of every planted line.
    fn planted() -> Vec<(&'static str, String, String)> {
        PLANTED
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (kind, text) = l.split_once('\t').expect("kind<TAB>text");
                let text = text.replace('⏎', "\n");
                let (before, rest) = text.split_once('⟦').expect("⟦");
                let (secret, after) = rest.split_once('⟧').expect("⟧");
                (kind, format!("{before}{secret}{after}"), secret.to_string())
            })
            .collect()
    }

    fn lookalikes() -> Vec<&'static str> {
        LOOKALIKES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect()
    }

    #[test]
    fn every_pattern_compiles() {
        for spec in SECRETS.iter().chain(PII) {
            Regex::new(spec.pattern).unwrap_or_else(|e| panic!("{}: {e}", spec.kind));
            for w in spec.keywords {
                assert!(
                    !w.is_empty() && w.is_ascii(),
                    "{}: keyword {w:?}",
                    spec.kind
                );
            }
        }
        Redactor::new(Level::Secrets);
        Redactor::new(Level::Pii);
    }

    #[test]
    fn planted_credentials_are_caught_completely_with_their_kind() {
        let planted = planted();
        let kinds: std::collections::BTreeSet<&str> = planted.iter().map(|p| p.0).collect();
        assert!(planted.len() >= 50, "{} planted", planted.len());
        assert!(kinds.len() >= 15, "{} kinds", kinds.len());
        for level in [Level::Secrets, Level::Pii] {
            let r = Redactor::new(level);
            for (kind, text, secret) in &planted {
                let mut counts = Counts::new();
                let out = r.redact_text(text, &mut counts);
                let want = text.replacen(secret.as_str(), &format!("<REDACTED:{kind}>"), 1);
                assert_eq!(out, want, "{kind} in {text:?}");
                assert_eq!(counts, Counts::from([(*kind, 1)]), "{text:?}");
            }
        }
    }

    /// An assistant message with one `exec` tool call of these arguments.
    fn exec_call(arguments: Value) -> Conversation {
        Conversation {
            messages: vec![Message {
                tool_calls: vec![ToolCall {
                    id: Some("call_1".into()),
                    name: "exec".into(),
                    arguments,
                }],
                ..Message::new(Role::Assistant, None)
            }],
            tools: vec![],
        }
    }

    #[test]
    fn planted_credentials_in_json_text_arguments_are_caught_and_stay_json() {
        let r = Redactor::new(Level::Secrets);
        for (kind, text, secret) in planted() {
            let args = serde_json::json!({"command": text, "n": 1}).to_string();
            let mut c = exec_call(Value::String(args));
            let mut counts = Counts::new();
            r.redact(&mut c, &mut counts);
            let out = c.messages[0].tool_calls[0].arguments_text();
            let value: Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{kind}: not JSON ({e}): {out}"));
            let command = value["command"].as_str().unwrap_or_default();
            assert!(!command.contains(&secret), "{kind}: {command}");
            assert!(
                command.contains(&format!("<REDACTED:{kind}>")),
                "{kind}: {command}"
            );
            assert_eq!(counts.get(kind), Some(&1), "{kind}: {counts:?}");
        }
    }

    #[test]
    fn lookalikes_are_left_byte_for_byte() {
        let lines = lookalikes();
        assert!(lines.len() >= 40, "{} look-alikes", lines.len());
        for level in [Level::Secrets, Level::Pii] {
            let r = Redactor::new(level);
            for line in &lines {
                let mut counts = Counts::new();
                assert_eq!(r.redact_text(line, &mut counts), *line, "{level:?}");
                assert!(counts.is_empty(), "{line}: {counts:?}");
            }
            let all = lines.join("\n");
            assert_eq!(r.redact_text(&all, &mut Counts::new()), all);
        }
    }

    #[test]
    fn one_value_one_placeholder_within_a_row_distinct_values_numbered() {
        let (a, b) = ("AKIAPGRYGR6KG2JMO37K", "AKIARLUJ2P2QM26YI5NW");
        let pw = "iePXJRne4EjgWZxw";
        let mut c = Conversation {
            messages: vec![
                Message::new(
                    Role::User,
                    Some(format!("keys {a} and {b}, DB_PASSWORD={pw}")),
                ),
                Message {
                    tool_calls: vec![ToolCall {
                        id: Some("call_1".into()),
                        name: "exec".into(),
                        arguments: serde_json::json!({"cmd": format!("aws configure set {a}"), "password": pw}),
                    }],
                    ..Message::new(Role::Assistant, None)
                },
                Message {
                    tool_call_id: Some("call_1".into()),
                    ..Message::new(
                        Role::Tool,
                        Some(format!("used {b}; login {pw} ok; again {a}")),
                    )
                },
            ],
            tools: vec![],
        };
        let mut counts = Counts::new();
        Redactor::new(Level::Secrets).redact(&mut c, &mut counts);
        let (ka, kb, kp) = (
            "<REDACTED:aws_access_key>",
            "<REDACTED:aws_access_key#2>",
            "<REDACTED:password>",
        );
        assert_eq!(
            c.messages[0].content.as_deref(),
            Some(format!("keys {ka} and {kb}, DB_PASSWORD={kp}").as_str())
        );
        assert_eq!(
            c.messages[1].tool_calls[0].arguments,
            serde_json::json!({"cmd": format!("aws configure set {ka}"), "password": kp})
        );
        assert_eq!(
            c.messages[2].content.as_deref(),
            Some(format!("used {kb}; login {kp} ok; again {ka}").as_str())
        );
        assert_eq!(
            counts,
            Counts::from([("aws_access_key", 5), ("password", 3)])
        );
    }

    #[test]
    fn rows_are_independent() {
        let r = Redactor::new(Level::Secrets);
        let text = "AKIARLUJ2P2QM26YI5NW";
        for _ in 0..2 {
            assert_eq!(
                r.redact_text(text, &mut Counts::new()),
                "<REDACTED:aws_access_key>"
            );
        }
    }

    #[test]
    fn json_text_arguments_stay_json_with_escapes_around_secrets() {
        let r = Redactor::new(Level::Secrets);
        let key = "ghp_Yww42sgX7YUVZk0VEdFMW4SNsGVyxLEnV6od";
        let pk = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5eJjO6TgGMUbKoAoGCCqGSM49\nAwEHoUQDQgAE3WBvhc3OH2BNCMBNoVWc3aFwEMHaVHbWrfB7vX1sOv8=\n-----END EC PRIVATE KEY-----";
        let args = serde_json::json!({
            "script": format!("echo \"{key}\"\n{key}\tdone\\{key}"),
            "key_file": pk,
            "env": {"GITHUB_TOKEN": key, "API_KEY": "8f3kL0qZ7mW2xR9tB4vN"},
        })
        .to_string();
        let mut c = exec_call(Value::String(args));
        let mut counts = Counts::new();
        r.redact(&mut c, &mut counts);
        let out = c.messages[0].tool_calls[0].arguments_text();
        let v: Value = serde_json::from_str(&out).expect("still JSON");
        let t = "<REDACTED:github_token>";
        assert_eq!(v["script"], format!("echo \"{t}\"\n{t}\tdone\\{t}"));
        assert_eq!(v["key_file"], "<REDACTED:private_key>");
        assert_eq!(v["env"]["GITHUB_TOKEN"], t);
        assert_eq!(v["env"]["API_KEY"], "<REDACTED:generic_secret>");
        assert_eq!(counts["github_token"], 4);
    }

    #[test]
    fn assignments_need_a_random_looking_value() {
        let r = Redactor::new(Level::Secrets);
        for kept in [
            "password=hunter2",
            "password = correcthorsebatterystaple",
            "api_key: ${OPENAI_API_KEY}",
            "token=process.env.GITHUB_TOKEN",
            "secret: aaaaaaaaaaaaaaaaaaaa1",
            "API_KEY=your_api_key_here_123",
            "keyboard: Logitech-K120-2026",
            "author: JohnSmith1984x",
            // Random-looking but 3.0 bits a character: below the threshold.
            "api_key=abcd1234abcd1234",
        ] {
            assert_eq!(r.redact_text(kept, &mut Counts::new()), kept);
        }
        for (text, want) in [
            (
                "api_key=8f3kL0qZ7mW2xR9tB4vN",
                "api_key=<REDACTED:generic_secret>",
            ),
            // As far from its name as an assignment may stand.
            (
                "client_secret\"   := \"8f3kL0qZ7mW2xR9tB4vN",
                "client_secret\"   := \"<REDACTED:generic_secret>",
            ),
            (
                "export DB_PASSWORD='Zq8#vK2$mP9!xL4w'",
                "export DB_PASSWORD='<REDACTED:password>'",
            ),
            (
                r#"{\"auth\": \"Q2xhdWRlQ29kZTIwMjY\"}"#,
                r#"{\"auth\": \"<REDACTED:generic_secret>\"}"#,
            ),
        ] {
            assert_eq!(r.redact_text(text, &mut Counts::new()), want);
        }
    }

    #[test]
    fn entropy_in_bits_a_character() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert_eq!(entropy("abcd1234abcd1234"), 3.0);
        assert!((entropy("8f3kL0qZ7mW2xR9tB4vN") - 20f64.log2()).abs() < 1e-9);
    }

    #[test]
    fn url_passwords_but_not_placeholders() {
        let r = Redactor::new(Level::Secrets);
        for kept in [
            "postgres://user:password@localhost/db",
            "mysql://root:$MYSQL_PASSWORD@db:3306",
            "https://user:@host.example/x",
            "amqp://guest:*****@rabbit",
        ] {
            assert_eq!(r.redact_text(kept, &mut Counts::new()), kept);
        }
        assert_eq!(
            r.redact_text("amqp://guest:guest2026@rabbit:5672", &mut Counts::new()),
            "amqp://guest:<REDACTED:url_password>@rabbit:5672"
        );
    }

    #[test]
    fn pii_adds_emails_and_phone_numbers_only_when_asked() {
        let text = "mail ada.lovelace@example.org or call +44 20 7946 0958, (415) 555-0100, 030 1234567 or 06 12 34 56 78";
        let secrets = Redactor::new(Level::Secrets);
        assert_eq!(secrets.redact_text(text, &mut Counts::new()), text);
        let mut counts = Counts::new();
        assert_eq!(
            Redactor::new(Level::Pii).redact_text(text, &mut counts),
            "mail <REDACTED:email> or call <REDACTED:phone>, <REDACTED:phone#2>, <REDACTED:phone#3> or <REDACTED:phone#4>"
        );
        assert_eq!(counts, Counts::from([("email", 1), ("phone", 4)]));
    }

    #[test]
    fn the_run_filter_passes_every_planted_text_and_skips_prose() {
        for (kind, text, _) in planted() {
            assert!(maybe_secret(text.as_bytes()), "{kind}: {text}");
        }
        assert!(!maybe_secret(
            "The agent reads files, plans edits, runs tests. Then it reports results to the user: résumé naïve café 東京 データ!".as_bytes()
        ));
        assert!(maybe_secret(b"see implementation2"));
        assert!(maybe_secret(b"hyphenated-words-count"));
        assert!(!maybe_secret(b"Implementation."));
    }

    /// The filter's definition, byte by byte: the oracle of [`maybe_secret`].
    fn maybe_secret_by_definition(bytes: &[u8]) -> bool {
        bytes
            .split(|&b| SEPARATOR[b as usize])
            .any(|run| run.len() >= MIN_RUN && !plain_word(run))
    }

    #[test]
    fn the_run_filter_agrees_with_its_definition() {
        let alphabet: Vec<u8> = "aZ9._-: \"é,".bytes().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut seen = [0usize; 2];
        for len in 0..200 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly letters, so long plain words and runs occur.
                        let i = (x % 40) as usize;
                        if i < 28 {
                            b'a' + (i % 26) as u8
                        } else {
                            alphabet[i % alphabet.len()]
                        }
                    })
                    .collect();
                let want = maybe_secret_by_definition(&bytes);
                assert_eq!(
                    maybe_secret(&bytes),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&bytes)
                );
                seen[usize::from(want)] += 1;
            }
        }
        assert!(seen[0] > 1000 && seen[1] > 1000, "{seen:?}");
    }

    #[test]
    fn no_panic_on_odd_input() {
        let r = Redactor::new(Level::Pii);
        for text in [
            "",
            "@",
            "://",
            ":a",
            "bearer",
            "basic ",
            "key=",
            "-----BEGIN",
            "\\",
            "é@é.é",
            "sk-ant-api03-",
            "+",
            "0",
            "AKIA",
            "password=\u{0}\u{0}",
            "x://:@",
            "\\n\\nAKIAPGRYGR6KG2JMO37K",
        ] {
            r.redact_text(text, &mut Counts::new());
        }
        assert_eq!(
            r.redact_text("\\nAKIAPGRYGR6KG2JMO37K", &mut Counts::new()),
            "\\n<REDACTED:aws_access_key>"
        );
    }
}
