#![no_main]
//! An image manifest as the deploy agent receives it from the server, checked
//! before anything is written to a disk, then walked frame by frame as the
//! writer does; and the first bytes of an image file as the importer detects
//! its format. None may panic.

use libfuzzer_sys::fuzz_target;
use rackboot_agent_proto::ImageManifest;

fuzz_target!(|data: &[u8]| {
    let _ = rackboot_images::detect(data);
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) else {
        return;
    };
    if manifest.validate().is_ok() {
        let mut raw_end = 0;
        for i in 0..manifest.frames() {
            let compressed = manifest.compressed_range(i);
            assert!(compressed.start < compressed.end);
            let raw = manifest.raw_range(i);
            assert_eq!(raw.start, raw_end, "frames cover the image without gaps");
            assert!(raw.start < raw.end);
            raw_end = raw.end;
        }
        assert_eq!(raw_end, manifest.raw_size);
        let _ = manifest.compressed_size();
    }
});
