//! Validation helpers shared by the operations: fencing, names and attributes, the named
//! limits, NOT_EXIST errors and lossless integer conversions.

use nines_core::{AisError, ErrorCode};

use crate::command::Attributes;
use crate::limits;

/// The fencing check: the checkpoint's max epoch after accepting `epoch`, or BAD_OPERATION for a
/// stale epoch or an unfenced command on a fenced checkpoint.
pub(super) fn check_epoch(ckpt_name: &str, max_epoch: u64, epoch: u64) -> Result<u64, AisError> {
    if epoch != 0 && epoch < max_epoch {
        return Err(AisError::new(
            ErrorCode::BadOperation,
            format!(
                "stale epoch {epoch}: checkpoint '{ckpt_name}' has accepted epoch {max_epoch}; \
                 a newer writer has fenced this one off"
            ),
        ));
    }
    if epoch == 0 && max_epoch != 0 {
        return Err(AisError::new(
            ErrorCode::BadOperation,
            format!(
                "unfenced write refused: checkpoint '{ckpt_name}' has accepted epoch \
                 {max_epoch}; pass an epoch ≥ {max_epoch}"
            ),
        ));
    }
    Ok(max_epoch.max(epoch))
}

/// INVALID_PARAM unless `name` has 1..=`NAME_BYTES_MAX` bytes.
pub(super) fn validate_name(name: &str) -> Result<(), AisError> {
    if name.is_empty() || name.len() > limits::NAME_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            format!(
                "checkpoint name has {} bytes; it must have 1..={}",
                name.len(),
                limits::NAME_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// INVALID_PARAM unless section id `id` has 1..=`SECTION_ID_BYTES_MAX` bytes.
pub(super) fn validate_section_id(ckpt_name: &str, id: &str) -> Result<(), AisError> {
    if id.is_empty() || id.len() > limits::SECTION_ID_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::InvalidParam,
            format!(
                "section id for checkpoint '{ckpt_name}' has {} bytes; it must have 1..={}",
                id.len(),
                limits::SECTION_ID_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// INVALID_PARAM naming the first attribute outside its range.
pub(super) fn validate_attributes(name: &str, attributes: &Attributes) -> Result<(), AisError> {
    let bad = |attribute: &str, value: u64, range: String| {
        Err(AisError::new(
            ErrorCode::InvalidParam,
            format!("cannot create checkpoint '{name}': {attribute} {value} is outside {range}"),
        ))
    };
    let sections_max = attributes.sections_max;
    if !(1..=limits::SECTIONS_MAX_LIMIT).contains(&sections_max) {
        let range = format!("1..={}", limits::SECTIONS_MAX_LIMIT);
        return bad("sections_max", u64::from(sections_max), range);
    }
    let section_size_max = attributes.section_size_max;
    if !(1..=limits::SECTION_SIZE_MAX_LIMIT).contains(&section_size_max) {
        let range = format!("1..={}", limits::SECTION_SIZE_MAX_LIMIT);
        return bad("section_size_max", section_size_max, range);
    }
    let checkpoint_size_max = attributes.checkpoint_size_max;
    if !(section_size_max..=limits::CHECKPOINT_SIZE_MAX_LIMIT).contains(&checkpoint_size_max) {
        let range = format!(
            "section_size_max..={} ({section_size_max}..={})",
            limits::CHECKPOINT_SIZE_MAX_LIMIT,
            limits::CHECKPOINT_SIZE_MAX_LIMIT
        );
        return bad("checkpoint_size_max", checkpoint_size_max, range);
    }
    Ok(())
}

/// NO_SPACE if a checkpoint holding `sections_used` sections cannot take another.
pub(super) fn check_sections_max(
    ckpt_name: &str,
    attributes: &Attributes,
    sections_used: usize,
) -> Result<(), AisError> {
    if sections_used >= to_usize(u64::from(attributes.sections_max)) {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "checkpoint '{ckpt_name}' holds {sections_used} sections, its sections_max; \
                 delete one first"
            ),
        ));
    }
    Ok(())
}

/// TOO_BIG if a section of `size` bytes exceeds the checkpoint's `section_size_max`.
pub(super) fn check_section_size(
    ckpt_name: &str,
    id: &str,
    attributes: &Attributes,
    size: u64,
) -> Result<(), AisError> {
    if size > attributes.section_size_max {
        return Err(AisError::new(
            ErrorCode::TooBig,
            format!(
                "section '{id}' of checkpoint '{ckpt_name}' would hold {size} bytes, more than \
                 its section_size_max {}",
                attributes.section_size_max
            ),
        ));
    }
    Ok(())
}

/// NO_SPACE if `bytes_used` exceeds the checkpoint's `checkpoint_size_max`.
pub(super) fn check_checkpoint_size(
    ckpt_name: &str,
    attributes: &Attributes,
    bytes_used: u64,
) -> Result<(), AisError> {
    if bytes_used > attributes.checkpoint_size_max {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "checkpoint '{ckpt_name}' would hold {bytes_used} bytes, more than its \
                 checkpoint_size_max {}; delete or shrink sections first",
                attributes.checkpoint_size_max
            ),
        ));
    }
    Ok(())
}

/// NO_SPACE if the cluster would hold more than `TOTAL_BYTES_MAX` bytes of section data.
pub(super) fn check_total_bytes(ckpt_name: &str, total_bytes: u64) -> Result<(), AisError> {
    if total_bytes > limits::TOTAL_BYTES_MAX {
        return Err(AisError::new(
            ErrorCode::NoSpace,
            format!(
                "writing to checkpoint '{ckpt_name}' would bring the cluster's section data to \
                 {total_bytes} bytes, more than the {} it may hold; unlink or shrink \
                 checkpoints first",
                limits::TOTAL_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// NOT_EXIST for checkpoint `name`.
pub(super) fn checkpoint_not_exist(name: &str) -> AisError {
    AisError::new(
        ErrorCode::NotExist,
        format!("checkpoint '{name}' does not exist"),
    )
}

/// NOT_EXIST for section `id` of checkpoint `ckpt`.
pub(super) fn section_not_exist(ckpt: &str, id: &str) -> AisError {
    AisError::new(
        ErrorCode::NotExist,
        format!("section '{id}' of checkpoint '{ckpt}' does not exist"),
    )
}

/// A byte count as u64 (lossless: usize is at most 64 bits on every supported target).
pub(super) fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).expect("usize fits in u64")
}

/// A size or offset already bounded by the limits, as usize.
pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("sizes bounded by the limits fit in usize")
}

/// A count bounded by the limits (sections_max, HANDLES_MAX), as u32.
pub(super) fn count_u32(n: usize) -> u32 {
    u32::try_from(n).expect("counts bounded by the limits fit in u32")
}

#[cfg(test)]
mod tests {
    use nines_core::ErrorCode;

    use super::check_epoch;

    #[test]
    fn epoch_rules() {
        assert_eq!(check_epoch("c", 0, 0), Ok(0));
        assert_eq!(check_epoch("c", 0, 3), Ok(3));
        assert_eq!(check_epoch("c", 3, 3), Ok(3));
        assert_eq!(check_epoch("c", 3, 4), Ok(4));
        let stale = check_epoch("c", 3, 2).expect_err("stale");
        assert_eq!(stale.code, ErrorCode::BadOperation);
        let unfenced = check_epoch("c", 3, 0).expect_err("unfenced");
        assert!(
            unfenced.message.starts_with("unfenced write refused"),
            "{unfenced}"
        );
    }
}
