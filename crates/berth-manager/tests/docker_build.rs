//! `DockerManager::build_image` against the engine: builds FROM a local
//! image with build arguments and labels, classified failures with the
//! build's last lines, and removal by label of images built on each other
//! (and keeping the ones named).

use berth_manager::Error;
use berth_manager::docker::{DockerConfig, DockerManager, ImageBuild};
use berth_testkit::{IMAGE_LABEL, TestRun};

/// Label key (value: the run id) on every image these tests build.
const BUILD_LABEL: &str = "berth-test.build";

/// A build context holding `files` (path, content).
fn context(files: &[(&str, &str)]) -> bytes::Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, content.as_bytes()).expect("tar entry");
    }
    builder.into_inner().expect("tar").into()
}

/// Removes the run's images when dropped, also when the test fails.
struct Images {
    config: DockerConfig,
    run: String,
}

impl Drop for Images {
    fn drop(&mut self) {
        let (config, run) = (self.config.clone(), self.run.clone());
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(m) = DockerManager::connect(config).await {
                    let _ = m.remove_images_with_label(BUILD_LABEL, Some(&run)).await;
                }
            });
        });
        let _ = worker.join();
    }
}

fn build(run: &TestRun, reference: &str) -> ImageBuild {
    ImageBuild::new(reference).label(IMAGE_LABEL, "berth-test-build").label(BUILD_LABEL, run.id())
}

#[tokio::test]
async fn builds_on_local_images_and_removes_them_children_first() {
    let Some(docker) = berth_testkit::docker_or_skip("builds_on_local_images_and_removes_them_children_first").await
    else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let _images = Images { config: docker.config().clone(), run: run.id().to_owned() };
    let base = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let child = format!("berth-test-build/child:{}", run.id());
    let grandchild = format!("berth-test-build/grandchild:{}", run.id());

    let dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY hello.txt /hello.txt\nLABEL stage=one\n";
    let built = docker
        .build_image(
            context(&[("Dockerfile", dockerfile), ("hello.txt", "hi")]),
            &build(&run, &child).build_arg("BASE", &base),
        )
        .await
        .expect("child build");
    assert_eq!(built.reference, child);
    assert!(built.id.as_deref().is_some_and(|id| id.starts_with("sha256:")), "{built:?}");
    let mut grand = build(&run, &grandchild).build_arg("BASE", &child);
    grand.dockerfile = "build/Containerfile".into();
    docker
        .build_image(context(&[("build/Containerfile", "ARG BASE\nFROM ${BASE}\nLABEL stage=two\n")]), &grand)
        .await
        .expect("grandchild build");
    assert!(docker.image_exists(&child).await.unwrap() && docker.image_exists(&grandchild).await.unwrap());

    // Images tagged with a kept reference stay (a cache of expensive builds).
    let keep = [child.clone(), grandchild.clone()];
    let removed = docker.remove_images_with_label_except(BUILD_LABEL, Some(run.id()), &keep).await.expect("remove");
    assert_eq!(removed, 0);
    assert!(docker.image_exists(&child).await.unwrap() && docker.image_exists(&grandchild).await.unwrap());

    // The child cannot go before the grandchild built on it, whatever the
    // order the engine lists them in.
    let removed = docker.remove_images_with_label(BUILD_LABEL, Some(run.id())).await.expect("remove");
    assert_eq!(removed, 2);
    assert!(!docker.image_exists(&child).await.unwrap() && !docker.image_exists(&grandchild).await.unwrap());
    assert!(docker.image_exists(&base).await.unwrap(), "the base image is not the run's");
}

#[tokio::test]
async fn failed_builds_say_why_with_the_log_tail() {
    let Some(docker) = berth_testkit::docker_or_skip("failed_builds_say_why_with_the_log_tail").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let _images = Images { config: docker.config().clone(), run: run.id().to_owned() };
    let base = berth_testkit::test_tool_image(&docker).await.expect("tool image");

    let reference = format!("berth-test-build/missing:{}", run.id());
    // No step before the failing one: a committed step would stay behind
    // as the builder's cache, an untagged image without the run's label.
    let dockerfile = format!("FROM {base}\nCOPY missing.txt /\n");
    let err = docker.build_image(context(&[("Dockerfile", &dockerfile)]), &build(&run, &reference)).await.unwrap_err();
    let Error::BuildFailed { image, message, log_tail } = &err else { panic!("{err:?}") };
    assert_eq!(image, &reference);
    assert!(message.contains("missing.txt"), "{message}");
    assert!(log_tail.contains("Step 2/") && log_tail.contains("COPY missing.txt"), "{log_tail}");
    assert!(!docker.image_exists(&reference).await.unwrap());

    let reference = format!("berth-test-build/bad:{}", run.id());
    let err =
        docker.build_image(context(&[("Dockerfile", "FROOM scratch\n")]), &build(&run, &reference)).await.unwrap_err();
    assert!(matches!(&err, Error::BuildFailed { message, .. } if message.to_lowercase().contains("froom")), "{err:?}");
}
