//! Writes the seed corpus of the snapshot target: bodies of real snapshots
//! of the golden log after 10, 100, 1,000 and all of its messages.
use std::io::BufRead;

use kpistream::config::EngineConfig;
use kpistream::processor::Processor;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: seed DIR GOLDEN_EVENTS");
    let events = std::env::args()
        .nth(2)
        .expect("usage: seed DIR GOLDEN_EVENTS");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: Vec<Vec<u8>> = std::io::BufReader::new(std::fs::File::open(events).unwrap())
        .split(b'\n')
        .map(Result::unwrap)
        .collect();
    for n in [10, 100, 1000, lines.len()] {
        let mut p = Processor::new(EngineConfig::on_event_clock());
        for l in &lines[..n] {
            p.process(l, 0);
        }
        let image = kpistream::snapshot::encode(&p, n as i64).unwrap();
        let body = kpistream::snapshot::body(&image);
        std::fs::write(format!("{dir}/golden-{n}"), body).unwrap();
    }
}
