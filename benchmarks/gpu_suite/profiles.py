"""The two profiles: every size, count and option the suite uses (recorded whole in the JSON's
``settings``), and the figures measured elsewhere that the report shows beside ours."""

# Figures measured elsewhere, recorded beside ours for reference; never used in a ratio.
ANCHORS = {
    "recovery_authors_code_h100_image_iters_per_s": {
        "imagenet1k": 1786, "tiny": 3608,
        "source": "the authors' recovery code on an H100 (224 px ipc 50, 64 px ipc 100), not this run"},
    "class_stats_authors_loop_vs_plain_forward": {
        "value": 96.6, "source": "the authors' per-class loop at ImageNet-1K, not this run"},
}

GPU_PROFILE = {
    "device": "cuda",
    "compile_backend": "inductor",
    # Estimated seconds per measurement for the budget check (H100: a ResNet-18 compile with inductor
    # is tens of seconds, a timed eager measurement a few; tests include a small inductor compile).
    "need_s": {"tests": 120, "stage": 30, "compile": 90, "measure": 25},
    "tests": {"paths": ["tests"], "timeout_s": 300},
    "stages": {
        "demo": {"num_classes": 10, "image_size": 64, "train_per_class": 50, "val_per_class": 10, "seed": 0},
        "model": "resnet18", "tiny_stem": True, "workers": 8,
        "teacher": {"epochs": 2, "batch_size": 128, "lr": 0.1, "warmup_epochs": 0},
        "class_stats": {"batch_size": 128},
        "recover": {"ipc": 10, "iterations": 50, "lr": 0.1, "r_bn": 0.05, "jitter_min": -4, "jitter_max": 4},
        "relabel": {"epochs": 4, "batch_size": 50, "input_path": "device"},
        "validate": {"train_epochs": 4, "adamw_lr": 0.001, "temperature": 4.0, "input_path": "device"},
        "diversity": {"batch_size": 128, "real_per_class": 20},
    },
    "speed": {
        "recovery": {
            "model": "resnet18", "ks": [1, 4, 10], "iters": 10, "warmup": 3, "augment_draw": "per_group",
            # bench_recover.SETTINGS gives size, classes, stem, dataset, lr, r_bn and jitter of each shape
            "settings": {"imagenet1k": {"ipc": 50}, "tiny": {"ipc": 100}},
        },
        "class_stats": {"model": "resnet18", "num_classes": 1000, "batch_size": 256, "image_size": 224,
                        "repeats": 5, "loop_repeats": 1},
        "labels": {"model": "resnet18", "size": 224, "classes": 1000, "batch_size": 128, "images": 1280,
                   "epochs": 3, "steps": 10, "workers": 12, "repeats": 2, "reads": 50},
        "input_path": {"size": 224, "images": 256, "batch": 128, "batches": 2, "repeats": 2,
                       "feed_images_per_s": 10000},
        "teacher": {"model": "resnet18", "tiny_stem": True, "num_classes": 200, "image_size": 64,
                    "batch_size": 256, "steps": 30, "warmup_steps": 3, "lr": 0.2},
    },
}

SMOKE_PROFILE = {
    "device": "cpu",
    "compile_backend": "aot_eager",  # traces like inductor, generates no code: seconds on a CPU
    "need_s": {"tests": 30, "stage": 5, "compile": 10, "measure": 5},
    "tests": {"paths": ["tests"], "timeout_s": 120},
    # 32 px and up: at 16 px timm's test_resnet ends in 1 x 1 feature maps, where the CPU's bf16
    # channels_last convolution backward was seen to return non-finite gradients now and then
    # (torch 2.14.1; it depended on what the allocator had handed out before): a toy-size artefact
    "stages": {
        "demo": {"num_classes": 4, "image_size": 32, "train_per_class": 6, "val_per_class": 2, "seed": 0},
        "model": "timm/test_resnet", "tiny_stem": False, "workers": 0,
        "teacher": {"epochs": 1, "batch_size": 12, "lr": 0.05, "warmup_epochs": 0},
        "class_stats": {"batch_size": 12},
        "recover": {"ipc": 2, "iterations": 2, "lr": 0.1, "r_bn": 0.05, "jitter_min": -1, "jitter_max": 1},
        "relabel": {"epochs": 2, "batch_size": 4, "input_path": "device"},
        "validate": {"train_epochs": 1, "adamw_lr": 0.001, "temperature": 4.0, "input_path": "device"},
        "diversity": {"batch_size": 8, "real_per_class": 2},
    },
    "speed": {
        "recovery": {
            "model": "timm/test_resnet", "ks": [1, 2], "iters": 1, "warmup": 1, "augment_draw": "per_group",
            "settings": {"imagenet1k": {"ipc": 2, "image_size": 48, "num_classes": 10, "tiny_stem": False},
                         "tiny": {"ipc": 2, "image_size": 32, "num_classes": 10, "tiny_stem": False}},
            # each compiled K costs a compile (seconds even with aot_eager): the toy run compiles
            # the headline K only; a setting may name its own "compiled_ks"
            "compiled_ks": [2],
        },
        "class_stats": {"model": "timm/test_resnet", "num_classes": 10, "batch_size": 8, "image_size": 32,
                        "repeats": 1, "loop_repeats": 1},
        "labels": {"model": "timm/test_resnet", "size": 16, "classes": 10, "batch_size": 4, "images": 16,
                   "epochs": 2, "steps": 2, "workers": 0, "repeats": 1, "reads": 5},
        "input_path": {"size": 32, "images": 8, "batch": 4, "batches": 1, "repeats": 1,
                       "feed_images_per_s": 10000},
        "teacher": {"model": "timm/test_resnet", "tiny_stem": False, "num_classes": 10, "image_size": 32,
                    "batch_size": 4, "steps": 2, "warmup_steps": 1, "lr": 0.2},
    },
}
