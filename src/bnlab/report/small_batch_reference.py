"""The reference run of ``bnlab experiment small-batch`` (default settings), shipped so that every demo report
can show the small mini-batch result without a 20-minute run. Written from that run's results.json by the
maintainers; the numbers are quoted in docs/small-batch.md. A user's own run in ``DIR/small-batch`` replaces it
in the report (:func:`bnlab.report.small_batch.for_report`)."""

REFERENCE = {
    "command": "bnlab experiment small-batch",
    "date": "2026-11-30",
    "config": {
        "batch_sizes": [2, 4, 8, 16, 32, 64],
        "seeds": [0, 1, 2],
        "norms": ["none", "activation", "channel"],
        "samples": 2048,
        "optimizer": "SGD, momentum 0.9",
        "lr32": 0.1,
        "recal_samples": 2048,
        "threads": 1,
        "data": {"name": "mnist", "train": 7000, "test": 2000, "image_shape": [1, 28, 28]},
    },
    "set_sizes": {
        "2": [
            {"layer": "features.bn1", "shape": [2, 16, 28, 28], "activation": 2, "channel": 1568},
            {"layer": "features.bn2", "shape": [2, 32, 14, 14], "activation": 2, "channel": 392},
            {"layer": "head.bn3", "shape": [2, 64], "activation": 2, "channel": 2},
        ],
        "4": [
            {"layer": "features.bn1", "shape": [4, 16, 28, 28], "activation": 4, "channel": 3136},
            {"layer": "features.bn2", "shape": [4, 32, 14, 14], "activation": 4, "channel": 784},
            {"layer": "head.bn3", "shape": [4, 64], "activation": 4, "channel": 4},
        ],
        "8": [
            {"layer": "features.bn1", "shape": [8, 16, 28, 28], "activation": 8, "channel": 6272},
            {"layer": "features.bn2", "shape": [8, 32, 14, 14], "activation": 8, "channel": 1568},
            {"layer": "head.bn3", "shape": [8, 64], "activation": 8, "channel": 8},
        ],
        "16": [
            {"layer": "features.bn1", "shape": [16, 16, 28, 28], "activation": 16, "channel": 12544},
            {"layer": "features.bn2", "shape": [16, 32, 14, 14], "activation": 16, "channel": 3136},
            {"layer": "head.bn3", "shape": [16, 64], "activation": 16, "channel": 16},
        ],
        "32": [
            {"layer": "features.bn1", "shape": [32, 16, 28, 28], "activation": 32, "channel": 25088},
            {"layer": "features.bn2", "shape": [32, 32, 14, 14], "activation": 32, "channel": 6272},
            {"layer": "head.bn3", "shape": [32, 64], "activation": 32, "channel": 32},
        ],
        "64": [
            {"layer": "features.bn1", "shape": [64, 16, 28, 28], "activation": 64, "channel": 50176},
            {"layer": "features.bn2", "shape": [64, 32, 14, 14], "activation": 64, "channel": 12544},
            {"layer": "head.bn3", "shape": [64, 64], "activation": 64, "channel": 64},
        ],
    },
    "summary": {
        "none": {
            "2": {"mean": 0.8521666666666666, "min": 0.7235, "max": 0.9195, "accuracies": [0.7235, 0.9195, 0.9135]},
            "4": {"mean": 0.8855, "min": 0.8425, "max": 0.9125, "accuracies": [0.8425, 0.9015, 0.9125]},
            "8": {"mean": 0.8643333333333333, "min": 0.8395, "max": 0.886, "accuracies": [0.8395, 0.8675, 0.886]},
            "16": {"mean": 0.8096666666666668, "min": 0.7865, "max": 0.832, "accuracies": [0.8105, 0.832, 0.7865]},
            "32": {"mean": 0.809, "min": 0.8, "max": 0.815, "accuracies": [0.8, 0.812, 0.815]},
            "64": {"mean": 0.5168333333333334, "min": 0.107, "max": 0.82, "accuracies": [0.82, 0.6235, 0.107]},
        },
        "activation": {
            "2": {"mean": 0.46199999999999997, "min": 0.4015, "max": 0.504, "accuracies": [0.4805, 0.504, 0.4015]},
            "4": {"mean": 0.73, "min": 0.7065, "max": 0.744, "accuracies": [0.7395, 0.744, 0.7065]},
            "8": {"mean": 0.8353333333333334, "min": 0.822, "max": 0.8555, "accuracies": [0.8285, 0.822, 0.8555]},
            "16": {"mean": 0.8925000000000001, "min": 0.877, "max": 0.9045, "accuracies": [0.896, 0.877, 0.9045]},
            "32": {"mean": 0.9006666666666666, "min": 0.8945, "max": 0.9065, "accuracies": [0.8945, 0.901, 0.9065]},
            "64": {"mean": 0.9170000000000001, "min": 0.913, "max": 0.924, "accuracies": [0.913, 0.924, 0.914]},
        },
        "channel": {
            "2": {"mean": 0.6116666666666667, "min": 0.5525, "max": 0.704, "accuracies": [0.5525, 0.704, 0.5785]},
            "4": {"mean": 0.9211666666666667, "min": 0.91, "max": 0.9335, "accuracies": [0.92, 0.91, 0.9335]},
            "8": {"mean": 0.9251666666666667, "min": 0.9075, "max": 0.941, "accuracies": [0.941, 0.9075, 0.927]},
            "16": {"mean": 0.9401666666666667, "min": 0.9335, "max": 0.947, "accuracies": [0.947, 0.94, 0.9335]},
            "32": {"mean": 0.9390000000000001, "min": 0.9205, "max": 0.956, "accuracies": [0.9405, 0.956, 0.9205]},
            "64": {"mean": 0.9323333333333332, "min": 0.9235, "max": 0.938, "accuracies": [0.9355, 0.938, 0.9235]},
        },
    },
    "seconds": 1329.535418797,
    "train_seconds": 614.0746138360145,
    "ema_summary": {
        "none": {
            "2": [0.7235, 0.9195, 0.9135],
            "4": [0.8425, 0.9015, 0.9125],
            "8": [0.8395, 0.8675, 0.886],
            "16": [0.8105, 0.832, 0.7865],
            "32": [0.8, 0.812, 0.815],
            "64": [0.82, 0.6235, 0.107],
        },
        "activation": {
            "2": [0.437, 0.5015, 0.363],
            "4": [0.73, 0.7235, 0.685],
            "8": [0.817, 0.7985, 0.8435],
            "16": [0.8565, 0.8615, 0.886],
            "32": [0.8395, 0.9195, 0.898],
            "64": [0.889, 0.9095, 0.889],
        },
        "channel": {
            "2": [0.5525, 0.728, 0.6],
            "4": [0.9205, 0.8465, 0.9315],
            "8": [0.928, 0.8985, 0.867],
            "16": [0.9285, 0.948, 0.8435],
            "32": [0.91, 0.949, 0.8175],
            "64": [0.868, 0.9095, 0.7435],
        },
    },
}
