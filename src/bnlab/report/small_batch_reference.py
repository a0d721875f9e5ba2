"""The reference run of ``bnlab experiment small-batch`` (default settings), shipped so that every demo report
can show the small mini-batch result without a 5-minute run. Written from that run's results.json by the
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
            "2": {
                "mean": 0.8521666666666666,
                "min": 0.7235,
                "max": 0.9195,
                "accuracies": [0.7235, 0.9195, 0.9135],
            },
            "4": {"mean": 0.8855, "min": 0.8425, "max": 0.9125, "accuracies": [0.8425, 0.9015, 0.9125]},
            "8": {"mean": 0.8643333333333333, "min": 0.8395, "max": 0.886, "accuracies": [0.8395, 0.8675, 0.886]},
            "16": {"mean": 0.8096666666666668, "min": 0.7865, "max": 0.832, "accuracies": [0.8105, 0.832, 0.7865]},
            "32": {"mean": 0.809, "min": 0.8, "max": 0.815, "accuracies": [0.8, 0.812, 0.815]},
            "64": {"mean": 0.5168333333333334, "min": 0.107, "max": 0.82, "accuracies": [0.82, 0.6235, 0.107]},
        },
        "activation": {
            "2": {"mean": 0.4255, "min": 0.3815, "max": 0.5015, "accuracies": [0.5015, 0.3935, 0.3815]},
            "4": {
                "mean": 0.7451666666666666,
                "min": 0.7355,
                "max": 0.7555,
                "accuracies": [0.7445, 0.7355, 0.7555],
            },
            "8": {"mean": 0.8511666666666667, "min": 0.809, "max": 0.881, "accuracies": [0.881, 0.809, 0.8635]},
            "16": {
                "mean": 0.8948333333333333,
                "min": 0.8815,
                "max": 0.9115,
                "accuracies": [0.8915, 0.8815, 0.9115],
            },
            "32": {"mean": 0.898, "min": 0.889, "max": 0.9065, "accuracies": [0.8985, 0.889, 0.9065]},
            "64": {"mean": 0.9173333333333334, "min": 0.912, "max": 0.921, "accuracies": [0.912, 0.921, 0.919]},
        },
        "channel": {
            "2": {"mean": 0.5571666666666667, "min": 0.529, "max": 0.572, "accuracies": [0.529, 0.572, 0.5705]},
            "4": {"mean": 0.9380000000000001, "min": 0.9325, "max": 0.948, "accuracies": [0.9335, 0.9325, 0.948]},
            "8": {"mean": 0.9301666666666667, "min": 0.92, "max": 0.9435, "accuracies": [0.9435, 0.92, 0.927]},
            "16": {"mean": 0.9371666666666667, "min": 0.934, "max": 0.9435, "accuracies": [0.9435, 0.934, 0.934]},
            "32": {"mean": 0.9390000000000001, "min": 0.9205, "max": 0.956, "accuracies": [0.9405, 0.956, 0.9205]},
            "64": {"mean": 0.934, "min": 0.9265, "max": 0.9395, "accuracies": [0.936, 0.9395, 0.9265]},
        },
    },
    "seconds": 330.31573663900053,
    "train_seconds": 155.60315306409757,
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
            "2": [0.481, 0.389, 0.316],
            "4": [0.7185, 0.731, 0.705],
            "8": [0.8595, 0.8115, 0.8365],
            "16": [0.8765, 0.884, 0.873],
            "32": [0.898, 0.877, 0.925],
            "64": [0.881, 0.9115, 0.8885],
        },
        "channel": {
            "2": [0.5305, 0.598, 0.611],
            "4": [0.933, 0.9125, 0.9445],
            "8": [0.9285, 0.92, 0.867],
            "16": [0.9325, 0.937, 0.851],
            "32": [0.9045, 0.949, 0.8175],
            "64": [0.8665, 0.913, 0.7745],
        },
    },
}
