use super::*;
use serde_json::json;

fn paths(allow: &[&str]) -> Paths {
    let config = PathsConfig {
        tools: None,
        arguments: vec!["path".into(), "paths".into(), "/opts/dir".into()],
        allow: allow.iter().map(|s| s.to_string()).collect(),
    };
    match prepare_paths(config) {
        Ok(p) => p,
        Err(e) => panic!("paths config refused: {e}"),
    }
}

/// `None` when allowed, else the deny reason.
fn verdict(p: &Paths, arguments: Value) -> Option<String> {
    p.check(&arguments)
}

#[test]
fn normalize_resolves_dots_slashes_and_refuses_relative_paths() {
    assert_eq!(normalize("/srv/data").as_deref(), Some("/srv/data"));
    assert_eq!(normalize("/srv/data/").as_deref(), Some("/srv/data"));
    assert_eq!(normalize("//srv///data//").as_deref(), Some("/srv/data"));
    assert_eq!(normalize("/srv/./data/.").as_deref(), Some("/srv/data"));
    assert_eq!(normalize("/srv/data/../../etc/passwd").as_deref(), Some("/etc/passwd"));
    assert_eq!(normalize("/../../etc").as_deref(), Some("/etc"));
    assert_eq!(normalize("/").as_deref(), Some("/"));
    assert_eq!(normalize("/..").as_deref(), Some("/"));
    // `...` is a name, not a climb.
    assert_eq!(normalize("/srv/data/...").as_deref(), Some("/srv/data/..."));
    assert_eq!(normalize("srv/data"), None);
    assert_eq!(normalize("./srv"), None);
    assert_eq!(normalize("~/data"), None);
    assert_eq!(normalize(""), None);
    assert_eq!(normalize(" /srv/data"), None);
    assert_eq!(normalize("file:///srv/data"), None);
}

#[test]
fn inside_compares_whole_segments() {
    assert!(inside("/srv/data", "/srv/data"));
    assert!(inside("/srv/data/a/b", "/srv/data"));
    assert!(!inside("/srv/data2", "/srv/data"));
    assert!(!inside("/srv/database/x", "/srv/data"));
    assert!(!inside("/srv", "/srv/data"));
    assert!(inside("/anything", "/"));
    assert!(inside("/", "/"));
}

#[test]
fn paths_inside_the_roots_pass() {
    let p = paths(&["/srv/data/", "/tmp/scratch"]);
    assert_eq!(p.roots, ["/srv/data", "/tmp/scratch"]);
    for path in ["/srv/data", "/srv/data/", "/srv/data/a.txt", "/srv/data/x/../y", "/tmp/scratch/./z", "/srv/data/..."] {
        assert_eq!(verdict(&p, json!({"path": path})), None, "{path}");
    }
    assert_eq!(verdict(&p, json!({"paths": ["/srv/data/a", "/tmp/scratch/b"]})), None);
    assert_eq!(verdict(&p, json!({"paths": []})), None);
    assert_eq!(verdict(&p, json!({"other": "/etc/passwd"})), None, "only the named arguments");
    assert_eq!(verdict(&p, json!({})), None);
    assert_eq!(verdict(&p, Value::Null), None, "no arguments at all");
}

#[test]
fn escapes_are_denied_with_the_argument_the_path_and_the_roots() {
    let p = paths(&["/srv/data"]);
    let reason = verdict(&p, json!({"path": "/srv/data/../../etc/passwd"})).unwrap_or_default();
    assert_eq!(
        reason,
        "`path` = /srv/data/../../etc/passwd (that is /etc/passwd) is outside the allowed paths (/srv/data)"
    );
    let reason = verdict(&p, json!({"path": "/etc/passwd"})).unwrap_or_default();
    assert_eq!(reason, "`path` = /etc/passwd is outside the allowed paths (/srv/data)");
    for path in ["/srv/data2", "/srv/data2/x", "/srv/data/..", "/srv", "/", "/srv/data/../data2"] {
        let reason = verdict(&p, json!({"path": path})).unwrap_or_default();
        assert!(reason.contains("is outside the allowed paths (/srv/data)"), "{path}: {reason:?}");
    }
}

#[test]
fn tricky_values_are_denied_with_a_clear_reason() {
    let p = paths(&["/srv/data"]);
    let cases = [
        (json!({"path": ""}), "`path` is an empty path"),
        (json!({"path": "data/x"}), "`path` = data/x is a relative path"),
        (json!({"path": "./x"}), "is a relative path"),
        (json!({"path": "~/x"}), "is a relative path"),
        (json!({"path": "/srv/data\\..\\..\\etc"}), "contains a backslash"),
        (json!({"path": "/srv/data/a\u{0}b"}), "contains a NUL character"),
        (json!({"path": 7}), "`path` must be a path string or an array of path strings, got the number 7"),
        (json!({"path": null}), "got null"),
        (json!({"path": {"p": "/srv/data"}}), "got an object"),
        (json!({"path": true}), "got the boolean true"),
        (json!({"paths": ["/srv/data/a", "/etc/x"]}), "`paths[1]` = /etc/x is outside"),
        (json!({"paths": ["/srv/data/a", 3]}), "`paths[1]` must be a path string, got the number 3"),
        (json!({"paths": [""]}), "`paths[0]` is an empty path"),
        (json!({"opts": {"dir": "/etc"}}), "`/opts/dir` = /etc is outside"),
        (json!("/srv/data/a"), "must be a JSON object"),
        (json!(["/srv/data/a"]), "must be a JSON object"),
    ];
    for (arguments, want) in cases {
        let reason = verdict(&p, arguments.clone()).unwrap_or_default();
        assert!(reason.contains(want), "{arguments}: {reason:?} lacks {want:?}");
    }
}

#[test]
fn the_first_bad_argument_is_reported_in_config_order() {
    let p = paths(&["/srv/data"]);
    let reason = verdict(&p, json!({"paths": ["/a"], "path": "/b"})).unwrap_or_default();
    assert!(reason.starts_with("`path` = /b"), "{reason}");
}

#[test]
fn reasons_escape_control_characters_and_cut_long_paths() {
    let p = paths(&["/srv/data"]);
    let reason = verdict(&p, json!({"path": "/etc/x\nALLOWED: yes"})).unwrap_or_default();
    assert!(!reason.contains('\n'), "{reason:?}");
    assert!(reason.contains("/etc/x\\nALLOWED: yes"), "{reason:?}");
    let long = format!("/etc/{}", "a".repeat(5000));
    let reason = verdict(&p, json!({ "path": long })).unwrap_or_default();
    assert!(reason.len() < 600, "{} bytes", reason.len());
    assert!(reason.contains("..."), "{reason}");
}

#[test]
fn the_root_of_everything_allows_any_absolute_path_but_not_relative_ones() {
    let p = paths(&["/"]);
    assert_eq!(verdict(&p, json!({"path": "/etc/passwd"})), None);
    assert!(verdict(&p, json!({"path": "etc/passwd"})).is_some());
}

#[test]
fn roots_must_be_absolute() {
    for (allow, want) in [
        (vec!["srv/data"], "config.paths.allow[0]: \"srv/data\" is not an absolute path"),
        (vec!["/ok", ""], "config.paths.allow[1]: \"\" is not an absolute path"),
        (vec!["C:\\data"], "config.paths.allow[0]"),
        (vec![], "config.paths.allow: the list is empty"),
    ] {
        let config = PathsConfig {
            tools: None,
            arguments: vec!["path".into()],
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        match prepare_paths(config) {
            Ok(_) => panic!("{allow:?} accepted"),
            Err(e) => assert!(e.contains(want), "{e}"),
        }
    }
}

#[test]
fn globs_match_runs_of_characters() {
    assert!(reins_sdk::glob_match("fs__move_file", "fs__move_file"));
    assert!(!reins_sdk::glob_match("fs__move_file", "fs__move_files"));
    assert!(reins_sdk::glob_match("fs__*", "fs__read_file"));
    assert!(reins_sdk::glob_match("fs__*", "fs__"));
    assert!(!reins_sdk::glob_match("fs__*", "xfs__read"));
    assert!(reins_sdk::glob_match("*__delete_*", "db__delete_rows"));
    assert!(reins_sdk::glob_match("*__delete_*", "__delete_"));
    assert!(!reins_sdk::glob_match("*__delete_*", "db__undelete"));
    assert!(reins_sdk::glob_match("*", ""));
    assert!(reins_sdk::glob_match("a*b*c", "aXbYc"));
    assert!(reins_sdk::glob_match("a*b*c", "abc"));
    assert!(!reins_sdk::glob_match("a*b*c", "acb"));
    assert!(!reins_sdk::glob_match("a*a", "a"), "prefix and suffix must not overlap");
    assert!(reins_sdk::glob_match("a*a", "aa"));
    assert!(reins_sdk::glob_match("*file", "fs__write_file"));
    assert!(reins_sdk::glob_match("fs__?", "fs__?"), "? is literal");
    assert!(!reins_sdk::glob_match("fs__?", "fs__a"));
    assert!(reins_sdk::glob_match("é*ü", "éaü"));
}

fn check(config: &Value, tool: &str, arguments: Value, access: Access) -> Result<Decision, String> {
    let ctx = CallContext::for_test(config, &json!({}));
    let action = Action { tool: tool.to_string(), arguments: arguments.to_string(), access };
    ToolRules::check(ctx, action)
}

#[test]
fn confinement_comes_before_an_allow_rule() {
    let config = json!({
        "rules": [{"tools": ["fs__*"], "decision": "allow"}],
        "paths": {"tools": ["fs__*"], "arguments": ["path"], "allow": ["/srv/data"]},
        "default": "deny",
    });
    let denied = check(&config, "fs__read_file", json!({"path": "/etc/passwd"}), Access::Read);
    assert!(matches!(denied, Ok(Decision::Deny(ref r)) if r.contains("outside")), "{denied:?}");
    let allowed = check(&config, "fs__read_file", json!({"path": "/srv/data/a"}), Access::Read);
    assert!(matches!(allowed, Ok(Decision::Allow)), "{allowed:?}");
    let other = check(&config, "web__get", json!({"path": "/etc/passwd"}), Access::Read);
    assert!(matches!(other, Ok(Decision::Deny(ref r)) if r.contains("matches no rule")), "{other:?}");
}

#[test]
fn bad_argument_json_is_an_error_not_a_decision() {
    let config = json!({"paths": {"arguments": ["path"], "allow": ["/srv/data"]}});
    let ctx = CallContext::for_test(&config, &json!({}));
    let action = Action { tool: "fs__x".into(), arguments: "{not json".into(), access: Access::Read };
    let answer = ToolRules::check(ctx, action);
    assert!(answer.as_ref().is_err_and(|e| e.contains("not valid JSON")), "{answer:?}");
}
