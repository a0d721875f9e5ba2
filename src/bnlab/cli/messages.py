"""The messages of the ``bnlab`` command, in English and Spanish (a later issue moves them to catalogs)."""

from __future__ import annotations

__all__ = ["MSG"]

MSG = {
    "en": {
        "error": "error",
        "try_help": "Try '{prog} --help' for more information.",
        "need_data": "--data is required with --dataset {dataset} ({what})",
        "digits_no_data": "--data is not used with --dataset digits (the digits ship with scikit-learn)",
        "no_path": "{flag} {path}: no such file or directory",
        "what_mnist": "a directory of IDX files or an .npz with 'images' and 'labels'",
        "what_cifar10": "the cifar-10-batches-py directory",
        "bad_data": "cannot read {flag} {path}: {err}",
        "exists": ("{ckpt} already exists: add --resume to continue that run, or choose another --out directory"),
        "no_resume": "--resume: no checkpoint in {out}; starting a new run",
        "resuming": "Resuming from {ckpt} (step {step})",
        "interrupted": "Interrupted at step {step}/{total}. Checkpoint saved to {ckpt}.\nContinue with: {cmd}",
        "interrupted_nosave": "Interrupted; nothing was saved.",
        "interrupted_plain": "Interrupted.",
        "interrupted_after_save": "Interrupted after training finished; the checkpoint {ckpt} is complete.",
        "interrupted_last_step": (
            "Interrupted during the last step: training had finished, so the run is complete (nothing to "
            "resume). Checkpoint: {ckpt}; history: {hist}"
        ),
        "rank_failed": "Rank {rank} of {nproc} {how}; the other ranks were stopped. {resume}",
        "rank_killed": "was killed by {sig}",
        "rank_exit": "failed (exit status {status})",
        "terminated": "Stopped by {sig}: every rank was ended. {resume}",
        "resume_hint": "The last checkpoint is {ckpt}; continue with: {cmd}",
        "nothing_saved": "No checkpoint was written yet.",
        "diverged": (
            "Training stopped: the loss became {loss} at step {step} (NaN or infinite values; the learning rate "
            "--lr {lr:g} is probably too large). {kept}"
        ),
        "diverged_kept": "The last good checkpoint was kept: {ckpt}",
        "diverged_none": "No checkpoint was written.",
        "already_done": (
            "{ckpt} has already done {done} of the {total} steps that --epochs {epochs} asks for: nothing to "
            "train. Give a larger --epochs to continue (it has {epochs_done} epochs)"
        ),
        "no_ckpt_in_dir": "{path} is a folder without {name}: pass a checkpoint written by 'bnlab train'",
        "out_not_dir": "{flag} {path} exists and is not a folder: choose a folder",
        "out_unwritable": "{flag} {path}: cannot create or write there ({err})",
        "figure_empty": "--figure needs a file name, such as setb.png",
        "figure_format": "--figure {path}: unknown image type {suffix!r}; use one of {formats}",
        "too_small": "{err} (images of {shape}); use --model mlp, or larger images",
        "trained": "Test accuracy (eval mode): {acc} — loss {loss} on {n} test images",
        "saved": "Checkpoint written to {ckpt}\nHistory written to {hist}\nFigure written to {fig}",
        "not_ckpt": "{path} is not a training checkpoint written by 'bnlab train': {err}",
        "evaluated": "{split} accuracy (eval mode, {what}): {acc} — loss {loss} on {n} {images}",
        "splits": {"test": "Test", "val": "Validation", "train": "Training"},
        "split_images": {"test": "test images", "val": "validation images", "train": "training images"},
        "ema": "running statistics",
        "no_bn_stats": {"none": "no normalization", "per_sample": "statistics of each image"},
        "recal": "recalibrated statistics (Alg. 2)",
        "no_recal": "--recalibrate: the network in {path} (norm={norm}) has no batch-normalization layer, so it has "
                    "no population statistics to recalibrate (Alg. 2); run the command without --recalibrate",
        "bad_shape": (
            "SHAPE must be positive integers separated by commas or 'x', such as 32,28,28,16 — got {shape!r}"
        ),
        "figure_saved": "Figure written to {path}",
        "unreadable": "cannot read {flag} {path}: {err}",
        "is_folder": "{flag} {path} is a folder: give a file name, such as {example}",
        "bench_missing": (
            "benchmarks/cpu.py is not in this checkout. The CPU benchmark lives in the bnlab source "
            "repository (benchmarks/cpu.py); it is not installed with the package. Clone the repository "
            "and run: python benchmarks/cpu.py"
        ),
        "bench_running": "Running {path}",
    },
    "es": {
        "error": "error",
        "try_help": "Prueba '{prog} --help' para más información.",
        "need_data": "--data es obligatorio con --dataset {dataset} ({what})",
        "digits_no_data": "--data no se usa con --dataset digits (los dígitos vienen con scikit-learn)",
        "no_path": "{flag} {path}: no existe ese archivo o directorio",
        "what_mnist": "un directorio con archivos IDX o un .npz con 'images' y 'labels'",
        "what_cifar10": "el directorio cifar-10-batches-py",
        "bad_data": "no se puede leer {flag} {path}: {err}",
        "exists": ("{ckpt} ya existe: añade --resume para continuar esa ejecución, o elige otro directorio --out"),
        "no_resume": "--resume: no hay punto de control en {out}; se empieza una ejecución nueva",
        "resuming": "Continuando desde {ckpt} (paso {step})",
        "interrupted": (
            "Interrumpido en el paso {step}/{total}. Punto de control guardado en {ckpt}.\nPara continuar: {cmd}"
        ),
        "interrupted_nosave": "Interrumpido; no se guardó nada.",
        "interrupted_plain": "Interrumpido.",
        "interrupted_after_save": (
            "Interrumpido después de terminar el entrenamiento; el punto de control {ckpt} está completo."
        ),
        "interrupted_last_step": (
            "Interrumpido durante el último paso: el entrenamiento ya había terminado, así que la ejecución está "
            "completa (no hay nada que continuar). Punto de control: {ckpt}; historial: {hist}"
        ),
        "rank_failed": "El proceso de rango {rank} de {nproc} {how}; se detuvieron los demás. {resume}",
        "rank_killed": "fue terminado por {sig}",
        "rank_exit": "falló (código de salida {status})",
        "terminated": "Detenido por {sig}: se terminaron todos los procesos. {resume}",
        "resume_hint": "El último punto de control es {ckpt}; para continuar: {cmd}",
        "nothing_saved": "Aún no se había escrito ningún punto de control.",
        "diverged": (
            "Entrenamiento detenido: la pérdida llegó a {loss} en el paso {step} (valores NaN o infinitos; la tasa "
            "de aprendizaje --lr {lr:g} es probablemente demasiado grande). {kept}"
        ),
        "diverged_kept": "Se conservó el último punto de control bueno: {ckpt}",
        "diverged_none": "No se escribió ningún punto de control.",
        "already_done": (
            "{ckpt} ya hizo {done} de los {total} pasos que pide --epochs {epochs}: no queda nada que entrenar. "
            "Da un --epochs mayor para continuar (lleva {epochs_done} épocas)"
        ),
        "no_ckpt_in_dir": "{path} es una carpeta sin {name}: pasa un punto de control escrito por 'bnlab train'",
        "out_not_dir": "{flag} {path} existe y no es una carpeta: elige una carpeta",
        "out_unwritable": "{flag} {path}: no se puede crear ni escribir ahí ({err})",
        "figure_empty": "--figure necesita un nombre de archivo, como setb.png",
        "figure_format": "--figure {path}: tipo de imagen desconocido {suffix!r}; usa uno de {formats}",
        "too_small": "{err} (imágenes de {shape}); usa --model mlp, o imágenes más grandes",
        "trained": "Exactitud de prueba (modo evaluación): {acc} — pérdida {loss} en {n} imágenes de prueba",
        "saved": "Punto de control escrito en {ckpt}\nHistorial escrito en {hist}\nFigura escrita en {fig}",
        "not_ckpt": "{path} no es un punto de control escrito por 'bnlab train': {err}",
        "evaluated": "Exactitud en {split} (modo evaluación, {what}): {acc} — pérdida {loss} en {n} {images}",
        "splits": {"test": "prueba", "val": "validación", "train": "entrenamiento"},
        "split_images": {
            "test": "imágenes de prueba",
            "val": "imágenes de validación",
            "train": "imágenes de entrenamiento",
        },
        "ema": "estadísticas acumuladas",
        "no_bn_stats": {"none": "sin normalización", "per_sample": "estadísticas de cada imagen"},
        "recal": "estadísticas recalibradas (Alg. 2)",
        "no_recal": "--recalibrate: la red de {path} (norm={norm}) no tiene capas de normalización por lotes, así que "
                    "no tiene estadísticas de la población que recalibrar (Alg. 2); ejecute la orden sin --recalibrate",
        "bad_shape": (
            "SHAPE deben ser enteros positivos separados por comas o 'x', como 32,28,28,16 — se recibió {shape!r}"
        ),
        "figure_saved": "Figura escrita en {path}",
        "unreadable": "no se puede leer {flag} {path}: {err}",
        "is_folder": "{flag} {path} es una carpeta: da un nombre de archivo, como {example}",
        "bench_missing": (
            "benchmarks/cpu.py no está en esta copia. El benchmark de CPU está en el repositorio de código de "
            "bnlab (benchmarks/cpu.py); no se instala con el paquete. Clona el repositorio y ejecuta: "
            "python benchmarks/cpu.py"
        ),
        "bench_running": "Ejecutando {path}",
    },
}
