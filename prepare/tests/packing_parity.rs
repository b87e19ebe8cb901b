//! Parity of our best-fit packer with the original's `make_dataloader`, on the fixture
//! made by `fixtures/packing/make_fixture.py` (a torch-free mirror of the original loop).

use prepare::Result;
use prepare::loader::{DocSource, Packer};
use serde_json::Value;

/// Serves documents like the original's `_document_batches`: row groups sliced into
/// refills of `per_refill`, cycling forever, each refill tagged with its epoch.
struct RowGroups {
    groups: Vec<Vec<Vec<u32>>>,
    per_refill: usize,
    group: usize,
    offset: usize,
    epoch: u64,
}

impl DocSource for RowGroups {
    fn next_docs(&mut self) -> Result<(Vec<Vec<u32>>, u64)> {
        if self.offset >= self.groups[self.group].len() {
            self.offset = 0;
            self.group += 1;
            if self.group == self.groups.len() {
                self.group = 0;
                self.epoch += 1;
            }
        }
        let g = &self.groups[self.group];
        let end = (self.offset + self.per_refill).min(g.len());
        let docs = g[self.offset..end].to_vec();
        self.offset = end;
        Ok((docs, self.epoch))
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn test_packing_matches_the_original_algorithm() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/packing/expected.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let batch = fixture["batch"].as_u64().unwrap() as usize;
    let seq = fixture["seq"].as_u64().unwrap() as usize;
    let groups: Vec<Vec<Vec<u32>>> = fixture["row_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_array().unwrap().iter().map(ids).collect())
        .collect();
    let source = RowGroups {
        groups,
        per_refill: fixture["tokenizer_batch"].as_u64().unwrap() as usize,
        group: 0,
        offset: 0,
        epoch: 1,
    };
    let mut packer = Packer::new(source, fixture["buffer_size"].as_u64().unwrap() as usize);
    for (n, expected) in fixture["batches"].as_array().unwrap().iter().enumerate() {
        let got = packer.next_batch(batch, seq).unwrap();
        let flat =
            |key: &str| -> Vec<u32> { expected[key].as_array().unwrap().iter().flat_map(ids).collect() };
        assert_eq!(got.inputs, flat("inputs"), "inputs of batch {n}");
        assert_eq!(got.targets, flat("targets"), "targets of batch {n}");
        assert_eq!(got.epoch, expected["epoch"].as_u64().unwrap(), "epoch of batch {n}");
    }
}
