// Stands in for the CUDA header of this name when kernels/*.cu are compiled for the emulated device.
#pragma once
#include "../cuda_emu.h"
