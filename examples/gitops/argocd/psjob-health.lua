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

-- The first condition of this list that is True decides: a failure outranks everything, and a
-- finished or suspended job is judged by that, not by whether its pods are ready.
local verdicts = {
  {"Failed", "Degraded"},
  {"Succeeded", "Healthy"},
  {"Suspended", "Suspended"},
  {"Ready", "Healthy"},
}
for _, verdict in ipairs(verdicts) do
  local condition = find_condition(status.conditions, verdict[1])
  if condition ~= nil and condition.status == "True" then
    hs.status = verdict[2]
    hs.message = condition.message
    return hs
  end
end

hs.status = "Progressing"
local restarting = find_condition(status.conditions, "Restarting")
local ready = find_condition(status.conditions, "Ready")
if restarting ~= nil and restarting.status == "True" then
  hs.message = "Restarting: " .. restarting.message
elseif ready ~= nil then
  hs.message = ready.message
else
  hs.message = "Phase " .. (status.phase or "unknown")
end
return hs
