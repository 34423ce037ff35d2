//! `worker dlq`'s text output (`show`, `list`, `replay`/`purge` lines) for a parked message
//! with any body and headers. Never panics; nothing reaches the terminal raw that
//! `escape::is_unsafe` names (C0/C1 controls, DEL, line separators, bidi controls), except
//! the newlines and tabs the output itself is laid out with and a body block keeps.
#![no_main]

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString},
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use worker::dlq::{
    DeadLetter,
    escape::{self, is_unsafe},
    pretty::pretty_json,
    read::Listing,
    render,
};

/// Header names `DeadLetter::new` reads, so the fuzzer reaches them without guessing.
const NAMES: &[&str] = &[
    "x-dlq-id",
    "x-notification-type",
    "x-original-routing-key",
    "x-dead-reason",
    "x-last-error",
    "x-last-status",
    "x-dead-lettered-at",
    "x-attempts",
    "x-delivery-count",
    "x-last-death-reason",
    "x-death",
    "x-received-at",
    "x-project-id",
];

/// An AMQP short string holds at most 255 bytes (`ShortString::from` panics past that).
fn short(mut s: String) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    ShortString::from(s)
}

fn value(u: &mut Unstructured, depth: u8) -> Result<AMQPValue> {
    Ok(match u.int_in_range(0..=5)? {
        0 => AMQPValue::LongLongInt(u.arbitrary()?),
        1 => AMQPValue::Timestamp(u.arbitrary()?),
        2 => AMQPValue::Boolean(u.arbitrary()?),
        3 if depth < 3 => AMQPValue::FieldTable(table(u, depth + 1)?),
        4 if depth < 3 => {
            let mut array = FieldArray::default();
            for _ in 0..u.int_in_range(0..=3)? {
                array.push(value(u, depth + 1)?);
            }
            AMQPValue::FieldArray(array)
        }
        _ => AMQPValue::LongString(LongString::from(u.arbitrary::<Vec<u8>>()?)),
    })
}

fn table(u: &mut Unstructured, depth: u8) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for _ in 0..u.int_in_range(0..=6)? {
        let name = if u.arbitrary()? {
            (*u.choose(NAMES)?).to_owned()
        } else {
            // x-death entries' own keys, or anything at all.
            (*u.choose(&[
                "reason",
                "queue",
                "time",
                "count",
                "routing-keys",
                "exchange",
            ])?)
            .to_owned()
        };
        let name = if u.ratio(1, 8)? {
            u.arbitrary::<String>()?
        } else {
            name
        };
        t.insert(short(name), value(u, depth)?);
    }
    Ok(t)
}

fn check(what: &str, out: &str) {
    if let Some(c) = out
        .chars()
        .find(|&c| is_unsafe(c) && c != '\n' && c != '\t')
    {
        panic!("{what}: raw {c:?} in {out:?}");
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let headers = table(u, 0)?;
    let message_id: Option<String> = u.arbitrary()?;
    let copies = u.int_in_range(1..=3)?;
    let body = u.arbitrary::<Vec<u8>>()?;

    // The escapers alone, on the raw text.
    let text = String::from_utf8_lossy(&body);
    assert!(!escape::line(&text).chars().any(is_unsafe));
    check("escape::block", &escape::block(&text));
    check("pretty_json", &escape::block(&pretty_json(&text)));

    let mut props = BasicProperties::default().with_headers(headers);
    if let Some(id) = message_id {
        props = props.with_message_id(short(id));
    }
    let m = DeadLetter::new(props, body);
    check("show", &render::show_text(&m, copies));
    check("replay", &render::replay_line(&m, true));
    check("purge", &render::purge_line(&m));
    let listing = Listing {
        queue_count: 1,
        matched: 1,
        messages: vec![m],
    };
    check("list", &render::listing_text(&listing));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
