// The public API of mghf.
export { Tensor, tensor, type TensorLike, type TensorLocation, type TensorOptions } from './tensor';
export { scope } from './lifetime';
export {
  ops,
  memory,
  DfeTape,
  type MemoryInfo,
  type DeviceMemory,
  type DfeOpOptions,
  type DfeOpResult,
  type ChannelSelection,
  type EntropyOpOptions,
  type TermOptions,
  type WithGrad,
  type CscOpOptions,
  type CscValue,
  type LipOpOptions,
  type LipValue,
  type MseTermValue,
  type DfeBackwardOptions,
  type PieceOptions,
  type CouplingOptions,
  type PieceBackwardOptions,
  type PieceGradient,
} from './ops';
export {
  AdamState,
  type AdamOptions,
  type AddOptions,
  type CharbonnierOptions,
  type Conv2dBackwardOptions,
  type Conv2dGrads,
  type Conv2dOptions,
  type Conv2dPadding,
  type LeakyReluOptions,
  type PixelLossOptions,
  type PixelLossValue,
  type ResizeBackwardOptions,
  type ResizeOptions,
  type WithDx,
} from './trainer-ops';
export { MghfError, type MghfErrorCode } from './errors';
export {
  loadWeights,
  loadWeightsSync,
  saveWeights,
  saveWeightsSync,
  createWeights,
  defaultWeights,
  DEFAULT_WEIGHTS_PATH,
  parameterCount,
  weightShapes,
  type DfeWeights,
  type DfeArchitecture,
  type CreateWeightsOptions,
} from './weights';
export {
  mghfLoss,
  mghfLossSync,
  dfeFeatures,
  dfeFeaturesSync,
  LOSS_OPTION_NAMES,
  estimateCost,
  type LossOptions,
  type LossResult,
  type LossParts,
  type PartName,
  type FeatureOptions,
  type Variant,
  type Device,
  type InputRange,
} from './loss';
export { type CostEstimate, OPTION_BOUNDS, MAX_FLOPS, MAX_MEMORY_FRACTION } from './limits';
export { backendInfo, type BackendInfo } from './native';
export {
  pretrain,
  type PretrainOptions,
  type PretrainResult,
  type PretrainProgress,
  type PretrainEpoch,
  type PretrainStart,
} from './pretrain';
export { createHeadWeights, loadCheckpoint, type Checkpoint, type CreateHeadOptions } from './checkpoint';
export { featureGrid, type FeatureGrid, type FeatureGridOptions } from './show';
export {
  loadImage,
  loadImages,
  saveImage,
  MAX_IMAGE_BYTES,
  MAX_BATCH_BYTES,
  type ImageSource,
  type LoadImageOptions,
  type SaveImageOptions,
} from './image';
export { type ImageLayout } from './validate';
export { SrNet, SR_FORMAT, srParameterShapes, type SrNetConfig, type SrNetPlacement, type SrTape } from './srnet';
export { upscaleImage, receptiveRadius, type UpscaleOptions } from './upscale';
