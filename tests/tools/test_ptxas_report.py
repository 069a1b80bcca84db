"""tools/ptxas_report.py reads ptxas's -v log as ptxas writes it: excerpts of real logs (CUDA
13.0's nvcc on our rpb_grad kernel; Triton 3.8's ptxas and ptxas-blackwell on a spilling
configuration of the fused forward kernel, 7x7 map, blocks 64x64, head dim 32, float16)."""

from tools.ptxas_report import KernelResources, parse_ptxas_log

NVCC_LOG = """\
ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_ZN9dinat_m2f2na4cuda15rpb_grad_kernelIdEEvPKT_PS3_NS0_7ProblemE' for 'sm_90'
ptxas info    : Function properties for _ZN9dinat_m2f2na4cuda15rpb_grad_kernelIdEEvPKT_PS3_NS0_7ProblemE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Compile time = 28.111 ms
ptxas info    : Compiling entry function '_ZN9dinat_m2f2na4cuda15qk_naive_kernelIfEEvPKT_S5_S5_PS3_NS0_7ProblemE' for 'sm_90'
ptxas info    : Function properties for _ZN9dinat_m2f2na4cuda15qk_naive_kernelIfEEvPKT_S5_S5_PS3_NS0_7ProblemE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compile time = 83.879 ms
"""  # noqa: E501

TRITON_LOGS = """\
ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function 'na_forward_kernel' for 'sm_90a'
ptxas info    : Function properties for na_forward_kernel
    720 bytes stack frame, 720 bytes spill stores, 720 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 720 bytes cumulative stack size
ptxas info    : Compile time = 3525.466 ms

ptxas-blackwell info    : 11 bytes gmem
ptxas-blackwell info    : Compiling entry function 'na_forward_kernel' for 'sm_100a'
ptxas-blackwell info    : Function properties for na_forward_kernel
    1024 bytes stack frame, 1164 bytes spill stores, 1296 bytes spill loads
ptxas-blackwell info    : Used 255 registers, used 1 barriers, 1024 bytes cumulative stack size
ptxas-blackwell info    : Compile time = 5906.670 ms
"""


def test_nvcc_log_gives_every_kernel_with_its_static_shared_memory():
    found = parse_ptxas_log(NVCC_LOG)
    assert found == {
        "_ZN9dinat_m2f2na4cuda15rpb_grad_kernelIdEEvPKT_PS3_NS0_7ProblemE": KernelResources(
            registers=30, spill_stores=0, spill_loads=0, local=0, static_shared=2048, barriers=1
        ),
        "_ZN9dinat_m2f2na4cuda15qk_naive_kernelIfEEvPKT_S5_S5_PS3_NS0_7ProblemE": KernelResources(
            registers=32, spill_stores=0, spill_loads=0, local=0, static_shared=0, barriers=0
        ),
    }


def test_spills_and_stack_of_each_ptxas():
    hopper, blackwell = TRITON_LOGS.split("\n\n")
    assert parse_ptxas_log(hopper) == {
        "na_forward_kernel": KernelResources(255, 720, 720, 720, 0, 1),
    }
    assert parse_ptxas_log(blackwell) == {
        "na_forward_kernel": KernelResources(255, 1164, 1296, 1024, 0, 1),
    }
    # a log of several compiles keeps each one's numbers (the last one, for a repeated name)
    assert parse_ptxas_log(TRITON_LOGS)["na_forward_kernel"].spill_loads == 1296


def test_device_functions_and_other_lines_are_not_kernels():
    log = (
        "ptxas info    : Function properties for _Z6helperv\n"
        "    16 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
        + NVCC_LOG.splitlines(keepends=True)[1]
        + "ptxas info    : Function properties for _Z6kernelv\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 12 registers, 64 bytes lmem, used 1 barriers, 4096 bytes smem\n"
    )
    (resources,) = parse_ptxas_log(log).values()
    # the entry's own frame is the one of its "Function properties" block (absent here: 0)
    assert resources == KernelResources(12, 0, 0, 64, 4096, 1)
