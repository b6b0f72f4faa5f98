# Sourced by the scripts that need CUDA 13.0's compiler parts without a CUDA install (the kernel gate, the
# emulated device): installs the pinned pip wheels once into target/cuda-venv, sets `cu13` to their folder,
# puts NVRTC on LD_LIBRARY_PATH and points TAPEGRAD_CUDA_INCLUDE at the CUDA headers. Run from the repository
# root.
venv=target/cuda-venv
wheels="nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$wheels" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $wheels
    echo "$wheels" > "$venv/.installed"
fi
cu13=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
export LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TAPEGRAD_CUDA_INCLUDE="$cu13/include"
