//! Measures an archive upload through the Azure Blob writer: `azure_upload <container URI> <MiB> [parallel]
//! [block MiB]` with Azurite's development key. Prints MiB/s, for comparison with azure-storage-blob's
//! `upload_blob(max_concurrency=…)` of the same bytes to the same Azurite.

use moat_model::storage_uri::StorageUri;
use moat_transfer::storage::{open_with, Credential, StorageOptions};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let uri: StorageUri = args[1].parse().expect("container URI");
    let mib: usize = args[2].parse().expect("MiB");
    let parallel = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(4);
    let block = args
        .get(4)
        .map(|s| s.parse::<usize>().unwrap())
        .unwrap_or(8)
        << 20;
    let outbound = moat_outbound::Outbound::new(Default::default(), Arc::new(Vec::new));
    let store = open_with(
        &uri,
        Credential::SharedKey {
            account: "devstoreaccount1".into(),
            key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
        },
        &outbound,
        &StorageOptions { block_size: block, parallel, ..Default::default() },
    )
    .unwrap();
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = std::time::Instant::now();
    let mut w = store.begin_write("bench.bin", None).unwrap();
    for _ in 0..mib {
        w.write_all(&chunk).unwrap();
    }
    w.commit().unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "moat: {mib} MiB in {s:.2} s = {:.0} MiB/s (parallel {parallel}, block {} MiB)",
        mib as f64 / s,
        block >> 20
    );
}
