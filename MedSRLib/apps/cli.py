"""The ``medsr`` command: super-resolve (one scan or a batch), degrade, evaluate, list methods, inspect and fetch data.

Every user error ends with one sentence on stderr and exit code 2; outputs are written under a temporary name and
renamed, so a failed run leaves no file behind.
"""
import argparse
import json
import os
import re
import sys
import warnings
from contextlib import contextmanager

import numpy as np

from MedSRLib.errors import MedSRError

EXIT_USER_ERROR = 2
EXIT_CASES_FAILED = 1  # medsr batch: some cases failed (the manifest says why)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: print(f"medsr: warning: {message}", file=sys.stderr)
        try:
            return args.run(args) or 0
        except MedSRError as error:
            print(f"medsr: error: {command_line_spelling(str(error), parser)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except BrokenPipeError:
            # The reader of our output (e.g. `| head`) closed it: not an error. Point stdout at devnull so Python's
            # final flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            kept = ("the cases finished so far are kept and in the manifest; rerun to continue" if args.command == "batch"
                    else "nothing was written")
            print(f"medsr: interrupted; {kept}.", file=sys.stderr)
            return 130


def command_line_spelling(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message with its keyword options as the command line spells them: ``force_scale=True`` becomes
    ``--force-scale``, ``target_spacing=…`` becomes ``--target-spacing …`` (every option of every subcommand)."""
    flags = {}
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    for subparser in (sub for action in subcommands for sub in action.choices.values()):
        for action in subparser._actions:
            if action.option_strings and action.dest not in flags:
                # The longest spelling (--memory-budget, not -m), never a switch's negation (--no-force-scale).
                spellings = [flag for flag in action.option_strings if not flag.startswith("--no-")]
                flags[action.dest] = (max(spellings, key=len), action.nargs == 0)

    def respell(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        flag, is_switch = flags[name]
        return flag if is_switch else f"{flag} {value}"
    return re.sub(r"\b([a-z_]+)=(True|…|\S+?)(?=[\s,;.)]*(?:\s|$))", respell, message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsr", description="Super-resolution of MRI and CT volumes.")
    commands = parser.add_subparsers(dest="command", required=True)

    sr = commands.add_parser("super-resolve", help="super-resolve a volume (NRRD, NIfTI, MHA or DICOM folder)")
    sr.add_argument("input", help="input volume: .nrrd, .nhdr, .nii, .nii.gz, .mha, .mhd, a Siemens mosaic file, or a "
                                   "folder holding one DICOM series")
    sr.add_argument("output", help="output file (.nrrd, .nii, .nii.gz, .mha)")
    sr.add_argument("--method", default="bspline", help="a method from `medsr methods` (default bspline)")
    sr.add_argument("--scale", help="one factor, SX,SY,SZ per physical axis (e.g. 1,1,3), or auto: the thick axis and "
                                    "factor from the spacing (default: auto for per-scan methods; a 2D in-plane "
                                    "model's own factors on the scan's finely sampled slices; else 2)")
    sr.add_argument("--target-spacing", type=float, metavar="MM",
                    help="instead of --scale: bring every axis coarser than MM to MM (e.g. 6 mm slices to 1.2 mm)")
    sr.add_argument("--checkpoint", help="checkpoint file or shipped model name for learned methods")
    sr.add_argument("--patch", type=int_list, help="patch size in input voxels: N or NZ,NY,NX (array order)")
    sr.add_argument("--stride", type=int_list, help="stride in input voxels: N or NZ,NY,NX")
    sr.add_argument("--blend", default="gaussian", choices=["gaussian", "average", "crop-margin"],
                    help="how overlapping windows of learned methods are combined (default gaussian weights)")
    sr.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                    help="where learned methods run (default auto: CUDA, then Apple MPS, then CPU)")
    sr.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                    help="what runs a learned method's network (default auto: OpenVINO on the CPU where it is installed "
                         "and the volume is large enough to repay converting the model once, else torch)")
    sr.add_argument("--batch", type=int, default=4, help="windows per batch (default 4)")
    sr.add_argument("--memory-budget", type=float, dest="memory_budget_gb", help="GiB the run may use (default 8)")
    sr.add_argument("--normalisation", choices=["percentile", "minmax", "window"],
                    help="intensity mapping to [0, 1] (default: the model's, from its checkpoint; else percentile)")
    sr.add_argument("--window", type=float_list, help="CT window CENTER,WIDTH for --normalisation window")
    sr.add_argument("--output-dtype", default="float32", choices=["float32", "input"],
                    help="float32 (default) or the input's type, rounded and clamped")
    sr.add_argument("--metadata-json", help="also write the result's provenance (method, scale, checkpoint) as JSON")
    add_method_option_arguments(sr)
    remote = sr.add_argument_group("on a `medsr serve` server")
    remote.add_argument("--server", metavar="URL", help="run on this server (e.g. http://127.0.0.1:8765 through an SSH "
                                                        "tunnel) on its device; the result is written here")
    remote.add_argument("--token", help="the server's token (default: $MEDSR_SERVER_TOKEN)")
    add_progress_arguments(sr)
    sr.set_defaults(run=run_super_resolve)

    degrade = commands.add_parser("degrade", help="simulate a low-resolution acquisition of a volume")
    degrade.add_argument("input")
    degrade.add_argument("output")
    degrade.add_argument("--operator", default="block-mean",
                         choices=["block-mean", "linear", "nearest", "kspace", "thick-slices"])
    degrade.add_argument("--factor", default="2", help="one factor or FX,FY,FZ per physical axis (default 2)")
    degrade.add_argument("--axis", default=None, choices=["x", "y", "z"], help="thick-slice axis (default: z)")
    degrade.add_argument("--profile", default="box", choices=["box", "gaussian"], help="thick-slice profile")
    degrade.add_argument("--gap", type=float, default=0.0, help="gap between thick slices, in input voxels")
    degrade.add_argument("--noise", choices=["gaussian", "rician"], help="add noise after degrading")
    degrade.add_argument("--sigma", type=float, default=0.01, help="noise sigma, as a fraction of the 99.5th percentile")
    degrade.add_argument("--seed", type=int, default=0)
    degrade.set_defaults(run=run_degrade)

    evaluate = commands.add_parser("evaluate", help="compare a result with a reference; prints JSON",
                                   description="Compare a result with a reference on the same grid and print JSON. Both are "
                                               "mapped to [0, 1] by the reference's 0.5 / 99.5 percentiles (clipped), "
                                               "as in the evaluation protocol; then psnr (dB, data range 1), "
                                               "psnr_foreground (where the reference is above 0.1), ssim (3D, 7-voxel "
                                               "window) and nrmse (RMS error over the reference's RMS). --mask limits "
                                               "every metric to the mask's non-zero voxels.")
    evaluate.add_argument("result")
    evaluate.add_argument("reference")
    evaluate.add_argument("--mask", help="label volume; metrics are computed where it is non-zero")
    evaluate.set_defaults(run=run_evaluate)

    methods = commands.add_parser("methods", help="list the methods and shipped models")
    methods.add_argument("--json", action="store_true")
    methods.set_defaults(run=run_methods)

    info = commands.add_parser("info", help="describe a volume's geometry and intensities")
    info.add_argument("input")
    info.set_defaults(run=run_info)

    batch = commands.add_parser("batch", help="super-resolve many scans: a folder, glob pattern, CSV or BIDS data set")
    batch.add_argument("input", help="folder, glob pattern, CSV (input, output[, method, scale]) or BIDS data set")
    batch.add_argument("output", help="output folder: outputs mirror the input layout; medsr-batch.jsonl lists them")
    batch.add_argument("--method", default="bspline", help="a method from `medsr methods` (default bspline)")
    batch.add_argument("--scale", help="as for super-resolve (default: auto for per-scan methods, else 2)")
    batch.add_argument("--workers", type=int, default=1, help="local processes (default 1; not with --scheduler)")
    batch.add_argument("--scheduler", help="run on the Dask cluster of this scheduler (tcp://HOST:PORT) instead")
    batch.add_argument("--glob", help="which files of a folder to take (default: every volume file, recursively)")
    batch.add_argument("--checkpoint", help="checkpoint file or shipped model name for learned methods")
    batch.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    batch.add_argument("--memory-budget", type=float, dest="memory_budget_gb", help="GiB each case may use (default 8)")
    batch.add_argument("--quiet", action="store_true", help="no line per finished case")
    batch.set_defaults(run=run_batch)

    demo = commands.add_parser("demo", help="super-resolve a real scan (Colin27 at 2 mm) with cubic B-spline and the "
                                             "best shipped x2 method, print their scores, write a comparison picture")
    demo.add_argument("output_dir", nargs="?", default="medsr-demo",
                      help="folder for the four volumes and comparison.png (default medsr-demo)")
    demo.add_argument("--method", default=None, help="method to show beside B-spline (default: the best shipped one "
                                                     "for x2, threeplayer with its threeplayer-x2 model; another "
                                                     "method runs with its default model)")
    add_progress_arguments(demo)
    demo.set_defaults(run=run_demo)

    fetch = commands.add_parser("fetch-data", help="fetch the real training and held-out volumes (docs/protocol.md) into a cache")
    fetch.add_argument("--dest", help="cache folder (default $MEDSR_DATA_DIR or ~/.cache/medsr/data)")
    fetch.add_argument("--only", nargs="+", help="dataset names to fetch (default: all)")
    add_progress_arguments(fetch)
    fetch.set_defaults(run=run_fetch)

    serve = commands.add_parser("serve", help="serve super-resolution to other computers (needs medsr[serve])",
                                description="An inference server for a GPU machine: clients (medsr super-resolve "
                                            "--server, MedSRLib.apps.client) upload a volume and download the result. "
                                            "Every request needs the token; across networks use an SSH tunnel or a "
                                            "TLS reverse proxy.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer "
                                                           "only)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument("--token", help="the token clients must send (default: $MEDSR_SERVER_TOKEN, else one generated "
                                       "on first start and kept in your configuration folder)")
    serve.add_argument("--workers", "--jobs", type=int, default=1, help="jobs run at a time, each in its own process; "
                                                                       "later ones wait (default 1)")
    serve.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload accepted (default 2048)")
    serve.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                       help="where the jobs run (default auto: CUDA, then Apple MPS, then CPU)")
    serve.add_argument("--keep-minutes", type=float, default=60,
                       help="how long a result not downloaded is kept (default 60)")
    serve.set_defaults(run=run_serve)
    return parser


def add_method_option_arguments(parser):
    """One flag per option any registered method declares (``Method.options``), its help saying which methods take
    it; an option the chosen method does not take is refused by :func:`method_options`."""
    from MedSRLib.methods.base import registered_methods
    from MedSRLib.methods.options import options_by_name
    group = parser.add_argument_group("method options", "each for the methods named in its help")
    grouped = options_by_name({method.name: method.options for method in registered_methods()})
    flags = {}
    for name, declarations in grouped.items():
        option = declarations[0][1]
        flags[name] = option.cli_flag
        methods = ", ".join(method for method, _ in declarations)
        help_text = f"{option.help} ({methods}; {describe_defaults(declarations)})"
        if option.kind == "bool":
            group.add_argument(option.cli_flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            # Only the text is converted here; ranges and choices are checked against the declaration.
            group.add_argument(option.cli_flag, dest=name, metavar=option_metavar(option), help=help_text,
                               type={"float": float, "int": int}.get(option.kind, str))
    parser.set_defaults(method_option_flags=flags)


def option_metavar(option) -> str:
    if option.kind == "choice":
        return "{" + ",".join(option.choices) + "}"
    return option.unit.upper() or {"float": "X", "int": "N", "path": "PATH"}[option.kind]


def describe_defaults(declarations):
    """ "default: 0", or per method where they differ ("default: clade no, smore yes")."""
    defaults = [(method, spelt_default(option)) for method, option in declarations]
    if len({default for _, default in defaults}) == 1:
        return f"default: {defaults[0][1]}"
    return "default: " + ", ".join(f"{method} {default}" for method, default in defaults)


def spelt_default(option) -> str:
    value = option.default
    if value is None:
        return "none" if option.kind == "path" else "the method's"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def method_options(args):
    """The method options given on the command line, checked against the chosen method's declarations before any
    file is read (an option it does not take, a value out of range: one sentence naming the flag)."""
    from MedSRLib.methods import get_method
    flags = args.method_option_flags
    options = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    get_method(args.method).check_options(options, spell=flags.__getitem__)
    return options


def add_progress_arguments(parser):
    parser.add_argument("--progress-lines", action="store_true",
                        help="print machine-readable progress lines on stdout (used by the Slicer module)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def int_list(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer or comma-separated integers") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be positive")
    return values[0] if len(values) == 1 else tuple(values)


def float_list(text):
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


@contextmanager
def progress_reporter(args, description):
    """A (done, total) callback: progress lines for the Slicer module, a tqdm bar on stderr, or nothing."""
    if args.progress_lines:
        from .process import format_progress_line

        def emit(done, total):
            print(format_progress_line(done, total), flush=True)
        yield emit
    elif args.quiet or not sys.stderr.isatty() and not os.environ.get("MEDSR_PROGRESS"):
        yield None
    else:
        from tqdm import tqdm
        bar = tqdm(desc=description, total=None, file=sys.stderr, unit="step")

        def update(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()
        try:
            yield update
        finally:
            bar.close()


def run_super_resolve(args):
    from MedSRLib.api import super_resolve
    from MedSRLib.grid.geometry import format_scale, parse_scale
    from MedSRLib.methods import get_method
    from MedSRLib.io.volume_files import check_output_path, read_volume, write_volume

    refuse_overwriting_input(args.input, args.output)
    check_output_path(args.output)
    options = run_options(args)
    if args.server:
        return run_on_server(args, options)
    volume = read_volume(args.input)
    scale = args.scale
    if scale is None and args.target_spacing is None:
        scale = get_method(args.method).default_scale(volume.spacing, args.checkpoint)
    if scale is None:
        label = f"to {args.target_spacing:g} mm"
    else:
        label = f"×{scale if isinstance(scale, str) else format_scale(parse_scale(scale))}"
    with progress_reporter(args, f"{args.method} {label}") as progress:
        result = super_resolve(volume, args.method, scale, device=args.device, progress=progress, **options)
    write_volume(result, args.output)
    report_written(args, result.size, result.spacing, result.metadata)


def run_on_server(args, options):
    """super-resolve --server: the same request, run on the server's device, the result downloaded to the output."""
    from MedSRLib.errors import InputError
    from .client import ServerClient
    if args.device != "auto":
        raise InputError("With --server the job runs on the server's device (medsr serve --device); leave out --device.")
    client = ServerClient(args.server, args.token)
    with progress_reporter(args, f"{args.method} on {args.server}") as progress:
        status = client.super_resolve_file(args.input, args.output, args.method, args.scale, progress=progress,
                                           **options)
    result = status["result"]
    report_written(args, result["size"], result["spacing"], result["metadata"])


def run_options(args):
    """super_resolve's keyword options the command line gives (not the device or the progress callback); those not
    given keep super_resolve's defaults, which on a server are the server's (its memory budget)."""
    options = dict(target_spacing=args.target_spacing, patch=args.patch, stride=args.stride, blend=args.blend,
                   batch_size=args.batch, backend=args.backend, checkpoint=args.checkpoint,
                   memory_budget_gb=args.memory_budget_gb,
                   normalisation=args.normalisation, window=args.window, output_dtype=args.output_dtype)
    return {**{name: value for name, value in options.items() if value is not None}, **method_options(args)}


def report_written(args, size, spacing, metadata):
    if args.metadata_json:
        with open(args.metadata_json, "w", encoding="utf-8") as stream:
            json.dump(metadata, stream, indent=2)
    print(f"wrote {args.output}: size {tuple(size)}, spacing {format_triple(spacing)} mm", file=sys.stderr)


def run_degrade(args):
    from MedSRLib.io.volume_files import check_output_path, read_volume, write_volume

    refuse_overwriting_input(args.input, args.output)
    check_output_path(args.output)
    from MedSRLib.evaluation.simulate import simulate_low_resolution

    factor = args.factor if args.operator != "thick-slices" else float(args.factor)
    result = simulate_low_resolution(read_volume(args.input), args.operator, factor, axis=args.axis or "z",
                                     profile=args.profile, gap=args.gap, noise=args.noise, sigma=args.sigma,
                                     seed=args.seed)
    write_volume(result, args.output)
    print(f"wrote {args.output}: size {result.size}, spacing {format_triple(result.spacing)} mm", file=sys.stderr)


def run_evaluate(args):
    from MedSRLib.errors import InputError
    from MedSRLib.grid.intensity import Normaliser
    from MedSRLib.evaluation.metrics import compare
    from MedSRLib.io.volume_files import read_volume

    result, reference = read_volume(args.result), read_volume(args.reference)
    if result.array.shape != reference.array.shape or not np.allclose(result.spacing, reference.spacing, rtol=1e-3):
        raise InputError(f"The result (size {result.size}, spacing {format_triple(result.spacing)}) is not on the "
                         f"reference's grid (size {reference.size}, spacing {format_triple(reference.spacing)}).")
    mask = None
    if args.mask:
        mask_volume = read_volume(args.mask)
        if mask_volume.array.shape != reference.array.shape:
            raise InputError(f"The mask has size {mask_volume.size}, the reference {reference.size}.")
        mask = mask_volume.array != 0
    # As in the evaluation protocol (docs/protocol.md): both mapped by the reference's 0.5 / 99.5 percentiles to [0, 1], data range 1.
    normaliser = Normaliser.fit(reference.array, clip=True)
    metrics = compare(normaliser.forward(result.array), normaliser.forward(reference.array), mask=mask)
    print(json.dumps({key: float(value) for key, value in metrics.items()}, indent=2))


def run_methods(args):
    from MedSRLib.api import methods_and_models
    listing = methods_and_models()
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    for method in listing["methods"]:
        print(f"{method['name']:<12} {method['kind']:<14} scales: {method['scales']:<10} {method['description']}")
        if method["options"]:
            print(f"{'':<12} options: {' '.join(option['flag'] for option in method['options'])}")
    for model in listing["models"]:
        print(f"model {model['name']}: {model['description']}")


def run_info(args):
    from MedSRLib.grid.geometry import detect_thick_axis
    from MedSRLib.io.volume_files import read_volume
    volume = read_volume(args.input)
    array = volume.array
    thick = detect_thick_axis(volume.spacing)
    lines = {
        "size (x, y, z)": str(volume.size),
        "spacing (mm)": format_triple(volume.spacing),
        "origin (LPS mm)": format_triple(volume.origin),
        "direction": " ".join(f"{v + 0.0:.4g}" for v in volume.direction),  # + 0.0: no "-0"
        "voxel type": str(array.dtype),
        "intensity min / max": f"{array.min():.6g} / {array.max():.6g}",
        "thick axis": "none (isotropic)" if thick is None else f"{'xyz'[thick.axis]}, factor {thick.factor:g}",
    }
    for key, value in lines.items():
        print(f"{key:<20} {value}")


def run_batch(args):
    from . import batch
    from MedSRLib.methods.base import DEFAULT_MEMORY_BUDGET_GB
    summary = batch.run_batch(
        args.input, args.output, args.method, args.scale, workers=args.workers, scheduler=args.scheduler,
        checkpoint=args.checkpoint, device=args.device, pattern=args.glob,
        memory_budget_gb=args.memory_budget_gb or DEFAULT_MEMORY_BUDGET_GB,
        log=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True))
    print(batch.format_summary(summary))
    return EXIT_CASES_FAILED if summary.failed else 0


def run_demo(args):
    from tqdm import tqdm
    from .demo import DEMO_METHOD, DEMO_MODEL, format_scores, run_demo
    method, checkpoint = (args.method, None) if args.method else (DEMO_METHOD, DEMO_MODEL)
    # Without a terminal for the progress bar (a log file, CI) the minutes-long run would print nothing: progress
    # lines instead.
    args.progress_lines |= not (args.quiet or sys.stderr.isatty() or os.environ.get("MEDSR_PROGRESS"))

    def log(line):
        if not args.quiet:
            tqdm.write(f"medsr demo: {line}", file=sys.stderr)  # above a running progress bar, not through it
    with progress_reporter(args, f"{method} ×2") as progress:
        demo = run_demo(args.output_dir, method, checkpoint, progress=progress, log=log)
    print(format_scores(demo.panels))
    print(f"wrote the volumes and {demo.picture}", file=sys.stderr)


def run_fetch(args):
    from MedSRLib.evaluation.datasets import fetch_datasets
    with progress_reporter(args, "fetch") as progress:
        manifest = fetch_datasets(args.dest, args.only, progress=progress)
    folder = os.path.dirname(str(manifest))
    with open(manifest, encoding="utf-8") as stream:
        for entry in json.load(stream)["datasets"]:
            print(f"{entry['name']:<32} {entry['split']:<9} {os.path.join(folder, entry['path'])}")
    print(f"manifest: {manifest}")


def run_serve(args):
    from .server import serve
    serve(args.host, args.port, args.token, args.device, args.workers, args.max_upload_mb, args.keep_minutes)


def refuse_overwriting_input(input_path, output_path):
    from MedSRLib.errors import InputError
    if os.path.exists(input_path) and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise InputError("The output path is the input file; MedSR never overwrites its input.")


def format_triple(values):
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


if __name__ == "__main__":
    sys.exit(main())
