-- Argo CD health of a modelops.io ModelDeployment, from the status the operator writes (its
-- phase and conditions, see rollout/conditions.py). The mapping and its reasons, in particular
-- why a paused rollout is Suspended: deploy/argocd/README.md. Uses only Lua's base library, as a
-- customization in argocd-cm without useOpenLibs must.
local hs = {}

local function condition(kind)
  if obj.status == nil or type(obj.status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local function with(text, detail)
  if detail ~= nil and detail ~= "" then
    return text .. ": " .. detail
  end
  return text
end

-- Being deleted: Argo CD (gitops-engine's GetResourceHealth) answers "Pending deletion" before any script
-- runs; the script says the same, and what the deletion waits for, to any other caller.
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  if type(obj.metadata.finalizers) == "table" and #obj.metadata.finalizers > 0 then
    hs.message = hs.message .. ": waiting for finalizers " .. table.concat(obj.metadata.finalizers, ", ")
  end
  return hs
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil and status.observedGeneration == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local synced = condition("Synced")
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  -- A spec the operator cannot read is never recorded as observed: that, and only that, is final.
  if synced ~= nil and synced.status == "False" and synced.reason == "InvalidSpec" then
    hs.status = "Degraded"
    hs.message = said(synced)
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. generation
  if observed ~= nil then
    hs.message = hs.message .. " (status is of generation " .. observed .. ")"
  end
  return hs
end

-- The operator could not finish its last round (API errors, a backend it does not own, a
-- missing ModelVersion...): it says so with Synced=False and Degraded=True.
if synced ~= nil and synced.status == "False" then
  hs.status = "Degraded"
  hs.message = said(synced)
  return hs
end

local phase = status.phase
local candidate = status.canaryVersion or "the candidate"
local weight = status.canaryWeight or 0
if phase == "Stable" then
  local ready = condition("Ready")
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    hs.message = "Stable " .. (status.stableVersion or "") .. " is serving"
    if obj.spec ~= nil and obj.spec.paused == true then
      hs.message = hs.message .. "; spec.paused is set: the next rollout holds at its first step"
    end
  else
    hs.status = "Progressing"
    hs.message = ready ~= nil and said(ready) or "Waiting for the backend to serve stable " .. (status.stableVersion or "")
  end
elseif phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = with("Rolling out " .. candidate .. " (" .. weight .. "% of traffic)", status.message)
elseif phase == "Queued" then
  -- Waiting for the operator's limit of rollouts in flight: a change still to come, stable serving meanwhile.
  hs.status = "Progressing"
  hs.message = with("Queued; stable " .. (status.stableVersion or "") .. " serves", status.message)
elseif phase == "Drilling" then
  -- A rollback drill: the fallback carries all traffic for a moment, then stable again (a change under way).
  local fallback = (type(status.drill) == "table" and status.drill.fallbackVersion) or status.fallbackVersion or "the fallback"
  hs.status = "Progressing"
  hs.message = with("Rollback drill: all traffic to fallback " .. fallback .. ", then back to stable " .. (status.stableVersion or ""), status.message)
elseif phase == "Paused" then
  -- Held by a person: Suspended, as Argo CD marks paused workloads (see the README for what it blocks).
  hs.status = "Suspended"
  if status.pinnedWeight ~= nil then
    hs.message = with(candidate .. " pinned at " .. status.pinnedWeight .. "% by spec.trafficOverride", status.message)
  else
    hs.message = with("Paused with " .. candidate .. " at " .. weight .. "% (spec.paused); resume to continue", status.message)
  end
elseif phase == "RollingBack" then
  -- Decided and final (a rollback sticks): Degraded now rather than when the last step is back.
  hs.status = "Degraded"
  hs.message = with("Rolling back " .. candidate .. " (" .. weight .. "% still on it)", status.message)
elseif phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = with((status.failedVersion or "spec.version") .. " is rolled back; stable " .. (status.stableVersion or "") .. " serves", status.message)
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Failed"
elseif phase == nil then
  hs.status = "Progressing"
  hs.message = status.message or "Waiting for the first version to be deployed"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
