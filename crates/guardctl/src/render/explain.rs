//! `guardctl explain PORT[/PROTO]`: the daemon's answer for one protocol,
//! or, without a protocol, for both TCP and UDP (the daemon is asked once
//! for each), saying which is published.

use portguard_config::printable;
use portguard_core::L4Proto;
use portguard_core::verdict::{ExplainAnswer, Explanation};

use super::table::Footnotes;

/// The answers to show, in order: one protocol asked about, or both.
pub struct Answers(pub Vec<(L4Proto, Explanation)>);

impl Answers {
    /// The answers that concern a published port (or the Docker API):
    /// all of them when none does.
    fn shown(&self) -> (Vec<&(L4Proto, Explanation)>, Vec<L4Proto>) {
        let (published, not): (Vec<_>, Vec<_>) = self
            .0
            .iter()
            .partition(|(_, e)| e.answer != ExplainAnswer::NotPublished);
        if published.is_empty() {
            // Nothing published at all: the first answer says why, the
            // others only that they are not published either.
            let mut rest = not.iter().map(|(proto, _)| *proto);
            let first = rest.next();
            return (
                self.0.iter().take(first.map_or(0, |_| 1)).collect(),
                rest.collect(),
            );
        }
        (published, not.iter().map(|(proto, _)| *proto).collect())
    }

    /// `8080/tcp: open`, the reasons, `PORT/udp: not-published` for a
    /// protocol not published beside one that is, and the warnings once
    /// each as footnotes.
    pub fn render(&self, port: u16) -> String {
        let (shown, unpublished) = self.shown();
        let mut notes = Footnotes::default();
        let mut text = String::new();
        for (proto, e) in shown {
            let target = format!("{port}/{proto}");
            let marks: String = e
                .warnings
                .iter()
                .map(|w| format!(" [{}]", notes.add(&target, port, proto, w)))
                .collect();
            text.push_str(&format!("{target}: {}{marks}\n", e.answer.as_str()));
            for reason in &e.reasons {
                text.push_str(&format!("  - {}\n", printable(reason)));
            }
        }
        for proto in unpublished {
            text.push_str(&format!(
                "{port}/{proto}: {}\n",
                ExplainAnswer::NotPublished.as_str()
            ));
        }
        text.push_str(&notes.render());
        text
    }

    /// `explain --json`. With a protocol given, the daemon's answer as it
    /// is. Without one, the answer for the protocol that is published (TCP
    /// when both or neither are) with `proto` added, and UDP's answer as
    /// `also` when both are published.
    pub fn json(&self, asked_for_one: bool) -> serde_json::Result<serde_json::Value> {
        if asked_for_one && let [(_, e)] = self.0.as_slice() {
            return serde_json::to_value(e);
        }
        let with_proto = |(proto, e): &(L4Proto, Explanation)| {
            let mut value = serde_json::to_value(e)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("proto".into(), serde_json::to_value(proto)?);
            }
            Ok::<_, serde_json::Error>(value)
        };
        let (shown, _) = self.shown();
        let mut shown = shown.into_iter();
        let Some(first) = shown.next() else {
            return Ok(serde_json::Value::Null);
        };
        let mut value = with_proto(first)?;
        if let Some(also) = shown.next()
            && let Some(object) = value.as_object_mut()
        {
            object.insert("also".into(), with_proto(also)?);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(answer: ExplainAnswer, reason: &str) -> Explanation {
        Explanation {
            answer,
            mode: portguard_config::Mode::Enforce,
            reasons: vec![reason.to_string()],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_published_protocol_is_explained_and_the_other_named() {
        let answers = Answers(vec![
            (L4Proto::Tcp, answer(ExplainAnswer::NotPublished, "no tcp")),
            (L4Proto::Udp, answer(ExplainAnswer::Open, "udp open")),
        ]);
        assert_eq!(
            answers.render(5353),
            "5353/udp: open\n  - udp open\n5353/tcp: not-published\n"
        );
        let json = answers.json(false).unwrap();
        assert_eq!(json["proto"], "udp");
        assert_eq!(json["answer"], "open");
        assert!(json.get("also").is_none());
    }

    #[test]
    fn neither_published_explains_tcp_and_names_udp() {
        let answers = Answers(vec![
            (L4Proto::Tcp, answer(ExplainAnswer::NotPublished, "no tcp")),
            (L4Proto::Udp, answer(ExplainAnswer::NotPublished, "no udp")),
        ]);
        assert_eq!(
            answers.render(9),
            "9/tcp: not-published\n  - no tcp\n9/udp: not-published\n"
        );
        assert_eq!(answers.json(false).unwrap()["proto"], "tcp");
    }

    #[test]
    fn both_published_are_both_explained() {
        let answers = Answers(vec![
            (L4Proto::Tcp, answer(ExplainAnswer::Closed, "tcp closed")),
            (L4Proto::Udp, answer(ExplainAnswer::Open, "udp open")),
        ]);
        assert_eq!(
            answers.render(53),
            "53/tcp: closed\n  - tcp closed\n53/udp: open\n  - udp open\n"
        );
        let json = answers.json(false).unwrap();
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["also"]["proto"], "udp");
        assert_eq!(json["also"]["answer"], "open");
    }

    #[test]
    fn one_protocol_asked_for_is_the_daemons_answer_unchanged() {
        let answers = Answers(vec![(
            L4Proto::Udp,
            answer(ExplainAnswer::NotPublished, "no udp"),
        )]);
        assert_eq!(
            answers.json(true).unwrap(),
            serde_json::json!({"answer": "not-published", "mode": "enforce", "reasons": ["no udp"]})
        );
        assert_eq!(answers.render(9), "9/udp: not-published\n  - no udp\n");
    }
}
