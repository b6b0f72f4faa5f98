//! Moving a tensor between devices: `to_device`. Backward moves the gradient back.
//!
//! `[..]` → `[..]` (contiguous on the target device).

use crate::backend::{copy_to, Device};
use crate::error::Result;
use crate::tape::record;
use crate::tensor::Tensor;

impl Tensor {
    /// The same values on `device` (the tensor itself when already there). Errors name a device that is not
    /// built in or not present.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let from = self.device();
        if from == device {
            return Ok(self.clone());
        }
        let whole =
            self.is_contiguous() && self.layout.offset == 0 && self.numel() == self.storage.len();
        let out = if whole {
            Tensor::from_storage(copy_to(&self.storage, device)?, self.shape())
        } else if from == Device::Cpu {
            let compact = self.detach().contiguous()?;
            Tensor::from_storage(copy_to(&compact.storage, device)?, self.shape())
        } else {
            // A view of a device buffer: bring the whole buffer over, then take the view there.
            let moved =
                Tensor::from_storage(copy_to(&self.storage, Device::Cpu)?, &[self.storage.len()])
                    .with_layout(self.layout.clone())
                    .contiguous()?;
            return moved
                .to_device(device)
                .and_then(|t| self.record_move(t, from));
        };
        self.record_move(out, from)
    }

    fn record_move(&self, out: Tensor, from: Device) -> Result<Tensor> {
        record("to_device", &[self], out, move |g, _| {
            Ok(vec![Some(g.to_device(from)?)])
        })
    }
}
