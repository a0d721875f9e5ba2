"""Planted bugs for issue 19's planned call (bnlab.nn._planned), fused NCHW backward (csrc/bn_body.h) and call
module (csrc/call/bncall.c)."""

P = "tests/nn/test_planned.py::"
N = "tests/kernels/test_native.py::"
PLANNED = "src/bnlab/nn/_planned.py"
BODY = "src/bnlab/kernels/csrc/bn_body.h"
CALL = "src/bnlab/kernels/csrc/call/bncall.c"

BUGS = [
    # a parameter of another dtype is not checked on each call: the kernel reads float64 bits as float32
    dict(name="planned-no-dtype-check", path=PLANNED,
         old="t.dtype != dtype or not t.is_cpu",
         new="not t.is_cpu",
         tests=[P + "test_after_planning_bad_tensors_are_refused_as_before_and_change_nothing[train]"]),
    # a call that autograd records runs the kernels without the Function: no gradient
    dict(name="planned-never-records", path=PLANNED,
         old="    if records:\n        y, mean, var = PlannedTrainFunction",
         new="    if False:\n        y, mean, var = PlannedTrainFunction",
         tests=[P + "test_the_planned_call_has_the_bits_of_the_general_path[nchw]"]),
    # a plan taken under a torch-dispatch mode (or a transform, or forward AD)
    dict(name="planned-ignores-modes", path=PLANNED,
         old="    if not _dispatch.eager_state():\n        return None\n",
         new="",
         tests=[P + "test_modes_transforms_and_forward_ad_are_not_bypassed_by_a_plan"]),
    # the key forgets whether running statistics are given: a refused call rides on a valid call's plan
    dict(name="planned-key-without-running", path=PLANNED,
         old="running_mean is None, running_var is None, weight is None",
         new="weight is None",
         tests=[P + "test_a_cumulative_average_without_a_count_is_refused_after_a_call_without_statistics"]),
    # a kernel's decline (inf/NaN in x) escapes instead of sending the call down the chain
    dict(name="planned-decline-escapes", path=PLANNED,
         old="        except contract.Declined:  # nothing changed yet",
         new="        except KeyError:  # nothing changed yet",
         tests=[P + "test_inf_in_a_planned_configuration_takes_the_general_path"]),
    # a small training call that autograd records runs the kernels' Function instead of torch's batch norm
    dict(name="planned-small-never-handed-over", path=PLANNED,
         old="    if records and small:",
         new="    if False:",
         tests=[P + "test_small_nchw_training_runs_torchs_batch_norm_only_where_autograd_records_it"]),
    # a small call handed to torch's batch norm reports one value fewer per channel (the running variance's
    # m'/(m' - 1) off)
    dict(name="planned-small-count-off", path=PLANNED,
         old="            return (*out, count)",
         new="            return (*out, count - 1)",
         tests=[P + "test_small_configurations_have_the_bits_of_the_general_path"]),
    # small training calls never planned (the general path's checks on every call, under no_grad too)
    dict(name="planned-small-never-planned", path=PLANNED,
         old="    axes, count, geometry, small = plan\n",
         new="    axes, count, geometry, small = plan\n    if small:\n        return None\n",
         tests=[P + "test_small_nchw_training_runs_torchs_batch_norm_only_where_autograd_records_it"]),
    # small training calls planned only with grad mode off (the general path's checks again where it is on)
    dict(name="planned-small-only-without-grad", path=PLANNED,
         old="    axes, count, geometry, small = plan\n",
         new="    axes, count, geometry, small = plan\n"
             "    if small and torch.is_grad_enabled():\n        return None\n",
         tests=[P + "test_small_nchw_training_runs_torchs_batch_norm_only_where_autograd_records_it"]),
    # the general path asks torch's batch norm first, before whether autograd records the call
    dict(name="general-small-before-records", path="src/bnlab/nn/_dispatch.py",
         old="        if not records_grad(x, weight, bias):  # nothing to differentiate: no autograd node, "
             "as torch's C++",
         new="        if _torch_small_train(x, weight, bias, axes, eps, relu) is not None:\n"
             "            return _torch_small_train(x, weight, bias, axes, eps, relu)\n"
             "        if not records_grad(x, weight, bias):",
         tests=[P + "test_small_nchw_training_runs_torchs_batch_norm_only_where_autograd_records_it"]),
    # the fused backward computes the coefficients of all but the last channel of each block
    dict(name="fused-block-misses-a-channel", path=BODY,
         old="                for (int64_t ch = c0; ch < c1; ch++)\n                    CAT(dx_coefficients_, SFX)",
         new="                for (int64_t ch = c0; ch + 1 < c1; ch++)\n                    CAT(dx_coefficients_, SFX)",
         tests=[N + "test_fused_nchw_backward_has_the_bits_of_the_two_passes[24x24-plain]"]),
    # the fused backward also taken with given (global) sums: dx from the local ones
    dict(name="fused-ignores-given-sums", path=BODY,
         old="reduce && !cl && dx && !given_sums && ",
         new="reduce && !cl && dx && ",
         tests=[N + "test_fused_nchw_backward_has_the_bits_of_the_two_passes[24x24-plain]"]),
    # the call module hands the kernel γ and β swapped (an argument out of order)
    dict(name="call-module-swaps-weight-and-bias", path=CALL,
         old="a[5].p, a[6].p, a[7].p, a[8].p, a[9].d,",
         new="a[5].p, a[6].p, a[8].p, a[7].p, a[9].d,",
         tests=[N + "test_the_call_module_and_ctypes_give_the_same_bits[nchw-f32]"]),
    # the call module drops synchronized BN's given sums (NULL: the kernel's own)
    dict(name="call-module-drops-given-sums", path=CALL,
         old="a[10].d,\n                          a[11].p,",
         new="a[10].d,\n                          NULL,",
         tests=[N + "test_the_call_module_and_ctypes_give_the_same_bits[cl-f64]"]),
    # the planned backward runs the kernel under a mode entered for the backward alone
    dict(name="planned-backward-ignores-modes", path=PLANNED,
         old="            and _dispatch.eager_state()\n",
         new="",
         tests=[P + "test_the_planned_backward_steps_aside_where_the_general_one_differs"]),
    # the planned backward runs the (non-differentiable) kernel under create_graph
    dict(name="planned-backward-not-differentiable", path=PLANNED,
         old="            and not torch.is_grad_enabled()\n",
         new="",
         tests=[P + "test_the_planned_backward_steps_aside_where_the_general_one_differs"]),
]  # fmt: skip
