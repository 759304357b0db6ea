//! The masquerade rule for the gateway bridge, in an nftables table of its own (family `ip`),
//! through the `nft` JSON interface. Each change is one `nft` transaction.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, NfObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use crate::model::Cidr;

const CHAIN: &str = "postrouting";

fn table(name: &str) -> Table<'static> {
    Table { family: NfFamily::IP, name: Cow::Owned(name.to_owned()), handle: None }
}

/// The comment of the table's masquerade rule, or `None` when the table is absent.
pub(crate) fn observe(table_name: &str) -> Result<Option<String>, NftablesError> {
    let tables = helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, ["list", "tables", "ip"])?;
    let exists = tables
        .objects
        .iter()
        .any(|o| matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.name == table_name));
    if !exists {
        return Ok(None);
    }
    let listed = helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, ["list", "table", "ip", table_name])?;
    Ok(listed.objects.iter().find_map(|o| match o {
        NfObject::ListObject(NfListObject::Rule(rule)) => rule.comment.as_ref().map(|c| c.to_string()),
        _ => None,
    }))
}

/// Replaces the table with one rule: masquerade `subnet` leaving by any link but `bridge`.
pub(crate) fn set(table_name: &str, subnet: Cidr, bridge: &str, comment: &str) -> Result<(), NftablesError> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(table_name)));
    batch.add_cmd(NfCmd::Flush(FlushObject::Table(table(table_name))));
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: Cow::Owned(table_name.to_owned()),
        name: Cow::Borrowed(CHAIN),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        ..Chain::default()
    }));
    let saddr = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: Cow::Borrowed("ip"),
            field: Cow::Borrowed("saddr"),
        }))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(subnet.addr.to_string()))),
            len: u32::from(subnet.prefix_len),
        })),
        op: Operator::EQ,
    });
    let oifname = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname })),
        right: Expression::String(Cow::Owned(bridge.to_owned())),
        op: Operator::NEQ,
    });
    batch.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: Cow::Owned(table_name.to_owned()),
        chain: Cow::Borrowed(CHAIN),
        expr: Cow::Owned(vec![saddr, oifname, Statement::Masquerade(None)]),
        comment: Some(Cow::Owned(comment.to_owned())),
        ..Rule::default()
    }));
    helper::apply_ruleset(&batch.to_nftables())
}

/// Removes the table (adding it first makes the deletion succeed when it is absent).
pub(crate) fn delete(table_name: &str) -> Result<(), NftablesError> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(table_name)));
    batch.delete(NfListObject::Table(table(table_name)));
    helper::apply_ruleset(&batch.to_nftables())
}

/// The comment of the first commented rule of table `name` (family `ip`), read from `nft`'s text
/// listing (its JSON of raw payload and `meta secpath` expressions is more than the `nftables`
/// crate reads), or `None` when the table is absent. `Err` says what failed.
pub(crate) fn observe_text(name: &str) -> Result<Option<String>, String> {
    let run = |args: &[&str]| -> Result<String, String> {
        let output = std::process::Command::new("nft")
            .args(args)
            .output()
            .map_err(|err| format!("run nft {}: {err} (install nftables)", args.join(" ")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("nft {} ({}): {}", args.join(" "), output.status, stderr.trim()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let tables = run(&["list", "tables", "ip"])?;
    if !tables.lines().any(|l| l.trim() == format!("table ip {name}")) {
        return Ok(None);
    }
    let listed = run(&["list", "table", "ip", name])?;
    Ok(listed.lines().find_map(|l| {
        let (_, rest) = l.split_once("comment \"")?;
        rest.split_once('"').map(|(comment, _)| comment.to_owned())
    }))
}
