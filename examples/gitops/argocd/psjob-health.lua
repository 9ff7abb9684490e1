-- Argo CD health check for psjob.dev/PSJob, from the conditions the psjob operator writes.
-- Healthy: the job succeeded, or runs with every pod ready. Degraded: the job failed.
-- Suspended: spec.runPolicy.suspend is true. Progressing: anything on the way there,
-- including a restart after a retryable failure and a spec change not yet acted on.
local hs = {}

local function find_condition(conditions, kind)
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function is_true(conditions, kind)
  local condition = find_condition(conditions, kind)
  return condition ~= nil and condition.status == "True", condition
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the psjob operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the psjob operator to act on generation " .. generation
  return hs
end

local conditions = status.conditions
local failed, failed_condition = is_true(conditions, "Failed")
if failed then
  hs.status = "Degraded"
  hs.message = failed_condition.message
  return hs
end

local succeeded, succeeded_condition = is_true(conditions, "Succeeded")
if succeeded then
  hs.status = "Healthy"
  hs.message = succeeded_condition.message
  return hs
end

local suspended, suspended_condition = is_true(conditions, "Suspended")
if suspended then
  hs.status = "Suspended"
  hs.message = suspended_condition.message
  return hs
end

local ready, ready_condition = is_true(conditions, "Ready")
if ready then
  hs.status = "Healthy"
  hs.message = ready_condition.message
  return hs
end

local restarting, restarting_condition = is_true(conditions, "Restarting")
hs.status = "Progressing"
if restarting then
  hs.message = "Restarting: " .. restarting_condition.message
elseif ready_condition ~= nil then
  hs.message = ready_condition.message
else
  hs.message = "Phase " .. (status.phase or "unknown")
end
return hs
