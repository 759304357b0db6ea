//! The template engine as tables: formats and objects in, text or the error out.

use super::*;

const COLUMNS: &[Column] = &[column("ID", "ID"), column("Name", "NAME"), column("Replicas", "REPLICAS")];

fn rows() -> Vec<Vec<String>> {
    vec![vec!["abc123".into(), "web".into(), "3/3".into()], vec!["def456".into(), "database".into(), "0/1".into()]]
}

#[test]
fn formats_fill_as_docker_does() {
    let cases: &[(&str, &str)] = &[
        ("{{.Name}}", "web\ndatabase\n"),
        ("{{.Name}}: {{.Replicas}}", "web: 3/3\ndatabase: 0/1\n"),
        ("{{ .Name }}", "web\ndatabase\n"),
        ("{{- .Name -}}", "web\ndatabase\n"),
        (r"{{.ID}}\t{{.Name}}", "abc123\tweb\ndef456\tdatabase\n"),
        ("{{upper .Name}}", "WEB\nDATABASE\n"),
        ("{{title .Name}}", "Web\nDatabase\n"),
        ("{{lower .ID}}", "abc123\ndef456\n"),
        ("{{truncate .Name 3}}", "web\ndat\n"),
        ("{{json .Name}}", "\"web\"\n\"database\"\n"),
        (
            "{{json .}}",
            "{\"ID\":\"abc123\",\"Name\":\"web\",\"Replicas\":\"3/3\"}\n{\"ID\":\"def456\",\"Name\":\"database\",\"Replicas\":\"0/1\"}\n",
        ),
        ("plain text", "plain text\nplain text\n"),
        (r"table {{.ID}}\t{{.Name}}", "ID       NAME\nabc123   web\ndef456   database\n"),
        (
            r"table {{.Name}}\t{{.Replicas}} replicas",
            "NAME       REPLICAS replicas\nweb        3/3 replicas\ndatabase   0/1 replicas\n",
        ),
    ];
    for (format, expected) in cases {
        let output = Output::parse(Some(format), COLUMNS).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(render(&output, &rows()), *expected, "{format}");
    }
}

#[test]
fn the_usual_outputs_are_left_to_the_command() {
    assert_eq!(Output::parse(None, COLUMNS), Ok(Output::Default));
    assert_eq!(Output::parse(Some("table"), COLUMNS), Ok(Output::Default));
    assert_eq!(Output::parse(Some("json"), COLUMNS), Ok(Output::Json));
    assert_eq!(render(&Output::Json, &rows()), "");
}

#[test]
fn bad_formats_say_what_is_valid() {
    let valid = "valid placeholders: {{.ID}}, {{.Name}}, {{.Replicas}}";
    let cases = [
        ("{{.Nmae}}", format!("unknown placeholder {{{{.Nmae}}}} in --format; {valid}")),
        ("table {{.ID}}\t{{.Image}}", format!("unknown placeholder {{{{.Image}}}} in --format; {valid}")),
        ("{{json .Foo}}", format!("unknown placeholder {{{{json .Foo}}}} in --format; {valid}")),
        (
            "{{Name}}",
            "unknown function \"Name\" in {{Name}} of --format; functions: json, upper, lower, title, truncate"
                .to_owned(),
        ),
        ("{{.Name", "--format \"{{.Name\": a {{ is not closed by }}".to_owned()),
        ("{{.Name}} }}", "--format \"{{.Name}} }}\": a }} has no {{ before it".to_owned()),
        ("{{}}", "an empty {{}} in --format: write a placeholder such as {{.Name}}".to_owned()),
        (
            "{{truncate .Name x}}",
            "{{truncate .Name x}} in --format: truncate takes a length, e.g. {{truncate .ID 12}}".to_owned(),
        ),
        ("{{.Name .ID}}", "{{.Name .ID}} in --format: write one placeholder, e.g. {{.Name}}".to_owned()),
    ];
    for (format, expected) in cases {
        assert_eq!(Output::parse(Some(format), COLUMNS), Err(expected), "{format}");
    }
}
