// The infotext WebUI writes for a generated image (the fields create_infotext prints, in its order), from the job's
// parameters, the checkpoint's identity and the extensions' additions.
#pragma once

#include "engine/extension/job_extension.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/pipeline/generation_params.h"
#include "engine/pipeline/infotext.h"
#include "engine/pipeline/sd_pipeline.h"

namespace atelier::engine {

// The infotext fields of image `image` of this job (the eta the sampler used decides "Eta"/"ENSD"). `extension`
// (may be null) adds its keys last.
InfotextFields GenerationInfotext(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                  const GeneratedImage& image, double eta, const JobExtension* extension = nullptr);
// The same from the checkpoint's identity alone (file name, hash, VAE source).
InfotextFields GenerationInfotext(const Sd1Weights& weights, const GenerationParams& params,
                                  const GeneratedImage& image, double eta, const JobExtension* extension = nullptr);

}  // namespace atelier::engine
